/** Public surface of the sans-I/O protocol core: catalogues (PMI-1, PMI-2), codecs, framing, limits, addresses. */
export * from './catalogue.js';
export * from './codec.js';
export * from './errors.js';
export * from './limits.js';
export * from './line-framer.js';
export * from './address.js';
export * from './spawn.js';
export { catalogueMarkdown } from './describe.js';
export { tokenize, isTokens, preview, type Tokens, type TokenizeFailure } from './tokenize.js';
export * from './pmi2-catalogue.js';
export * from './pmi2-codec.js';
export { PMI2_HEADER_LENGTH, PMI2_LENGTH_LIMIT, PMI2_MAX_FRAME, encodeFrame, escapeValue, frameHeader, parseFrameHeader, tokenizeFrame, isPmi2Tokens, type Pmi2Tokens, type Pmi2TokenizeFailure, type HeaderCheck } from './pmi2-frame.js';
export * from './wire-framer.js';
export * from './first-bytes.js';
export { pmi2CatalogueMarkdown } from './describe.js';
