/** Public surface of the sans-I/O protocol core: catalogue, codec, framing, limits, addresses. */
export * from './catalogue.js';
export * from './codec.js';
export * from './errors.js';
export * from './limits.js';
export * from './line-framer.js';
export * from './address.js';
export * from './spawn.js';
export { catalogueMarkdown } from './describe.js';
export { tokenize, isTokens, preview, type Tokens, type TokenizeFailure } from './tokenize.js';
