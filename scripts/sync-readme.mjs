// Rewrites every code block of README.md and docs/*.md marked `<!-- snippet: path#name -->` with the region
// `name` of `path` (between `// #region name` and `// #endregion name`), so that the documentation shows code
// the tests run. test/readme.e2e-spec.ts fails when a block and its region differ.
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';

function region(file, name) {
  const text = readFileSync(file, 'utf8');
  const open = `// #region ${name}\n`;
  const start = text.indexOf(open);
  const end = text.indexOf(`// #endregion ${name}`);
  if (start < 0 || end < 0) throw new Error(`no region ${name} in ${file}`);
  const lines = text.slice(start + open.length, end).split('\n');
  lines.pop();
  const indent = Math.min(...lines.filter((l) => l.trim()).map((l) => l.length - l.trimStart().length));
  return lines.map((l) => l.slice(indent)).join('\n');
}

const pages = [
  'README.md',
  ...readdirSync('docs')
    .filter((name) => name.endsWith('.md'))
    .sort()
    .map((name) => `docs/${name}`),
];

for (const page of pages) {
  const text = readFileSync(page, 'utf8');
  // A block ends at its first line that is exactly ``` (an empty block too), never at a later block's fence.
  const synced = text.replace(
    /<!-- snippet: (\S+)#(\S+) -->\n\n?```ts\n[\s\S]*?^```$/gm,
    (_block, file, name) => `<!-- snippet: ${file}#${name} -->\n\n\`\`\`ts\n${region(file, name)}\n\`\`\``,
  );
  if (synced !== text) {
    writeFileSync(page, synced);
    console.log(`${page}: updated`);
  }
}
