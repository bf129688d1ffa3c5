/** A dataset file or request that cannot be used; the message names the file or field and the problem. */
export class DatasetError extends Error {
  readonly name = 'DatasetError';
}
