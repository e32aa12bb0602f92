import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/** The library's source, without its specs. */
const SRC = fileURLToPath(new URL('../src/', import.meta.url));

/** A file past this many lines holds more than one thing (STYLE.md: one file owns one thing). */
const MAX_LINES = 250;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return name.endsWith('.ts') && !name.endsWith('.spec.ts') ? [path] : [];
  });
}

/** Every relative import of a file (type-only ones included), resolved to a source path. */
function importsOf(file: string): string[] {
  const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
  return importedFiles
    .map((imported) => imported.fileName)
    .filter((name) => name.startsWith('.'))
    .map((name) => resolve(dirname(file), name.replace(/\.js$/, '.ts')));
}

/** The import cycles among `files`, each as the list of files around it. */
function cyclesOf(files: string[]): string[][] {
  const graph = new Map(files.map((file) => [file, importsOf(file)]));
  const cycles: string[][] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (file: string): void => {
    if (state.get(file) === 'done') return;
    if (state.get(file) === 'visiting') {
      cycles.push(stack.slice(stack.indexOf(file)).map((each) => relative(SRC, each)));
      return;
    }
    state.set(file, 'visiting');
    stack.push(file);
    for (const next of graph.get(file) ?? []) if (graph.has(next)) visit(next);
    stack.pop();
    state.set(file, 'done');
  };
  for (const file of files) visit(file);
  return cycles;
}

describe('source layout', () => {
  const files = sourceFiles(SRC);

  it('has no import cycle, type-only imports included', () => {
    expect(cyclesOf(files)).toEqual([]);
  });

  it(`keeps every source file under ${MAX_LINES} lines`, () => {
    const long = files
      .map((file) => ({ file: relative(SRC, file), lines: readFileSync(file, 'utf8').split('\n').length }))
      .filter(({ lines }) => lines > MAX_LINES);
    expect(long).toEqual([]);
  });

  it('keeps the library out of deep imports into @nestjs internals', () => {
    const deep = files.filter((file) =>
      /from '@nestjs\/[a-z-]+\/(?!package\.json)/.test(readFileSync(file, 'utf8')),
    );
    expect(deep.map((file) => relative(SRC, file))).toEqual([]);
  });
});
