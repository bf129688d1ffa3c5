import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isTask, relabel, taskClasses } from '../datasets/tasks.ts';
import type { Split } from '../datasets/types.ts';

const split: Split = { x: new Float32Array(7), y: Int32Array.from([0, 1, 4, 5, 9, 3, -1]), n: 7 };

test('tasks map digits to their labels, keeping -1 (no label) as it is', () => {
  assert.equal(Array.from(relabel(split, 'parity').y), [0, 1, 0, 1, 1, 1, -1]);
  assert.equal(Array.from(relabel(split, 'ge5').y), [0, 0, 0, 1, 1, 0, -1]);
  assert.equal(Array.from(relabel(split, 'one-vs-rest-3').y), [0, 0, 0, 0, 0, 1, -1]);
  assert.is(relabel(split, 'digits'), split, 'the identity task copies nothing');
  assert.is(relabel(split, 'parity').x, split.x, 'rows are shared');
  assert.equal(Array.from(split.y), [0, 1, 4, 5, 9, 3, -1], 'the input split is untouched');
});

test('task names and class counts', () => {
  assert.ok(isTask('one-vs-rest-9'));
  assert.not.ok(isTask('one-vs-rest-10'));
  assert.not.ok(isTask('odd'));
  assert.is(taskClasses('digits', 10), 10);
  assert.is(taskClasses('ge5', 10), 2);
  assert.throws(() => relabel(split, 'odd' as never), /unknown task "odd"/);
});

test.run();
