// ts-jest in CommonJS mode, after one rewrite: `import.meta.url` (what the shared suites use to find files
// beside them) becomes the CommonJS equivalent, so that the suites of ../../test run here unchanged.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { TsJestTransformer } = require('ts-jest');

const IMPORT_META_URL = /\bimport\.meta\.url\b/g;
const FILE_URL = "require('node:url').pathToFileURL(__filename).href";

function portable(source) {
  return source.replace(IMPORT_META_URL, FILE_URL);
}

export default {
  createTransformer(options) {
    const tsJest = new TsJestTransformer(options);
    return {
      canInstrument: false,
      getCacheKey: (source, path, transformOptions) =>
        tsJest.getCacheKey(portable(source), path, transformOptions),
      process: (source, path, transformOptions) => tsJest.process(portable(source), path, transformOptions),
    };
  },
};
