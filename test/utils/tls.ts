import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** A key and its self-signed certificate, PEM. */
export interface TestCertificate {
  readonly key: string;
  readonly cert: string;
}

let made: TestCertificate | undefined;

/**
 * A self-signed certificate for 127.0.0.1 and localhost, made once per test process with `openssl req` (no
 * private key is committed). Pass it as `https` to `createApp()`, and its `cert` as `ca` to the requests.
 */
export function testCertificate(): TestCertificate {
  if (made !== undefined) return made;
  const dir = mkdtempSync(path.join(tmpdir(), 'nestjs-cancellation-tls-'));
  try {
    const keyFile = path.join(dir, 'key.pem');
    const certFile = path.join(dir, 'cert.pem');
    // Node's crypto cannot issue X.509 certificates; openssl is on every CI image this project uses.
    // prettier-ignore
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    made = { key: readFileSync(keyFile, 'utf8'), cert: readFileSync(certFile, 'utf8') };
    return made;
  } catch (err) {
    const message = `test/utils/tls.ts needs openssl on the PATH to make a test certificate: ${String(err)}`;
    throw new Error(message, { cause: err });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
