import { Fn, Module, assemble, at, f32, get, i32, v128, type Expr, type Local } from './asm.ts';

/**
 * SIMD kernels that run on tfjs-backend-wasm's own heap: a second, small WebAssembly module,
 * written with engine/wasm/asm.ts, that imports the backend's memory, so tensors are read and
 * written where they lie. They cover what a training step needs and XNNPACK (inside the
 * backend) either lacks or does slowly here: matrix products in register tiles (Aᵀ·B for
 * weight gradients, A·B with bias and ReLU), patch matrices of convolutions and their adjoint,
 * max pooling and its gradient (fused with a ReLU's and the bias gradient where they meet),
 * bias broadcasts, column sums and Adam's update. Addresses are byte offsets into the heap;
 * counts are elements; leading dimensions are in floats.
 */

/**
 * Register tiles of the matrix products: up to 4 rows by 2 vectors (8 columns). Measured on
 * the shapes of our students, 4×8 beat 3×16, 6×8, 2×16 and 8×4 (Aᵀ·B: 12–14 GMAC/s; A·B:
 * 16–19; XNNPACK's own matmul reaches 15 on a large square product).
 */
export const TILE_ROWS = 4;
export const TILE_VECTORS = 2;

/**
 * C[mr × 4nv] (+)= Σ_k A[k, 0..mr)ᵀ B[k, 0..4nv): one register tile of A^T·B over `K` rows.
 * Leading dimensions are in floats. With `acc` = 0 the tile starts from zero instead of C.
 */
function gemmTile(mr: number, nv: number): Fn {
  const f = new Fn(`gemm_tn_${mr}x${nv}`, ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32']);
  const [a, lda, b, ldb, c, ldc, kLen, acc] = f.params;
  const accs: Local[][] = [];
  for (let i = 0; i < mr; i++) accs.push(Array.from({ length: nv }, () => f.local('v128')));
  const bv = Array.from({ length: nv }, () => f.local('v128'));
  const av = f.local('v128');
  const k = f.local('i32');
  const rowC = (i: number) => i32.add(get(c), i32.mul(get(ldc), i32.const(4 * i)));
  f.if(
    get(acc),
    () => accs.forEach((row, i) => row.forEach((l, j) => f.set(l, v128.load(rowC(i), 16 * j)))),
    () => accs.forEach((row) => row.forEach((l) => f.set(l, v128.zero()))),
  );
  const strideA = f.local('i32');
  const strideB = f.local('i32');
  f.set(strideA, i32.shl(get(lda), i32.const(2)));
  f.set(strideB, i32.shl(get(ldb), i32.const(2)));
  f.for(k, i32.const(0), get(kLen), 1, () => {
    bv.forEach((l, j) => f.set(l, v128.load(get(b), 16 * j)));
    for (let i = 0; i < mr; i++) {
      f.set(av, v128.loadSplat(get(a), 4 * i));
      accs[i].forEach((l, j) => f.set(l, v128.add(get(l), v128.mul(get(av), get(bv[j])))));
    }
    f.set(a, i32.add(get(a), get(strideA)));
    f.set(b, i32.add(get(b), get(strideB)));
  });
  accs.forEach((row, i) => row.forEach((l, j) => f.store('v128', rowC(i), get(l), 16 * j)));
  return f;
}

/**
 * C[M, N4] (+)= A^T·B over all register tiles (see gemmTile): whole 4-row tiles, then the
 * remaining rows; per row band, 8-column tiles, then a last 4-column one.
 */
function gemmTNDriver(tiles: Fn[][]): Fn {
  const f = new Fn('gemm_tn', Array(10).fill('i32'));
  const [a, lda, b, ldb, c, ldc, m, n4, kLen, acc] = f.params;
  const [m0, n0, mr] = Array.from({ length: 3 }, () => f.local('i32'));
  const band = (rows: number) => {
    const tile = (nv: number) => f.call(tiles[rows][nv], at(get(a), get(m0)), get(lda), at(get(b), get(n0)), get(ldb),
      at(get(c), i32.add(i32.mul(get(m0), get(ldc)), get(n0))), get(ldc), get(kLen), get(acc));
    f.for(n0, i32.const(0), i32.sub(get(n4), i32.const(4 * TILE_VECTORS - 1)), 4 * TILE_VECTORS, () => tile(TILE_VECTORS));
    f.if(i32.lt(get(n0), get(n4)), () => tile(1));
  };
  f.for(m0, i32.const(0), i32.sub(get(m), i32.const(TILE_ROWS - 1)), TILE_ROWS, () => band(TILE_ROWS));
  f.set(mr, i32.sub(get(m), get(m0)));
  for (let rows = 1; rows < TILE_ROWS; rows++) f.if(i32.eq(get(mr), i32.const(rows)), () => band(rows));
  return f;
}

/**
 * C = relu?(A·B + bias) for `rows` rows (a multiple of mr), in register tiles of mr rows by
 * 4nv columns: A [rows, K] (rows `lda` floats apart), B [K, ·] (`ldb`), C (`ldc`), bias the
 * tile's 4nv values. The forward pass of a convolution over its patch matrix.
 */
function gemmNN(mr: number, nv: number): Fn {
  const f = new Fn(`gemm_nn_${mr}x${nv}`, Array(10).fill('i32'));
  const [a, lda, b, ldb, c, ldc, kLen, bias, relu, rows] = f.params;
  const accs: Local[][] = [];
  for (let i = 0; i < mr; i++) accs.push(Array.from({ length: nv }, () => f.local('v128')));
  const bv = Array.from({ length: nv }, () => f.local('v128'));
  const av = f.local('v128');
  const [r, k, pa, pb, strideB] = Array.from({ length: 5 }, () => f.local('i32'));
  const rowOffset = Array.from({ length: mr }, () => f.local('i32'));
  f.set(strideB, i32.shl(get(ldb), i32.const(2)));
  rowOffset.forEach((l, i) => f.set(l, i32.mul(get(lda), i32.const(4 * i))));
  f.for(r, i32.const(0), get(rows), mr, () => {
    accs.forEach((row) => row.forEach((l, j) => f.set(l, v128.load(get(bias), 16 * j))));
    f.set(pa, at(get(a), i32.mul(get(r), get(lda))));
    f.set(pb, get(b));
    f.for(k, i32.const(0), get(kLen), 1, () => {
      bv.forEach((l, j) => f.set(l, v128.load(get(pb), 16 * j)));
      for (let i = 0; i < mr; i++) {
        f.set(av, v128.loadSplat(i32.add(get(pa), get(rowOffset[i]))));
        accs[i].forEach((l, j) => f.set(l, v128.add(get(l), v128.mul(get(av), get(bv[j])))));
      }
      f.set(pa, i32.add(get(pa), i32.const(4)));
      f.set(pb, i32.add(get(pb), get(strideB)));
    });
    const rowC = (i: number) => at(get(c), i32.mul(i32.add(get(r), i32.const(i)), get(ldc)));
    f.if(get(relu), () => accs.forEach((row) => row.forEach((l) => f.set(l, v128.max(get(l), v128.zero())))));
    accs.forEach((row, i) => row.forEach((l, j) => f.store('v128', rowC(i), get(l), 16 * j)));
  });
  return f;
}

/** (n, oh, ow) of patch row p0 in an [n, ho, wo] grid of output pixels. */
function firstPixel(f: Fn, p0: Local, wo: Local, ho: Local, n: Local, oh: Local, ow: Local): void {
  f.set(ow, i32.remS(get(p0), get(wo)));
  f.set(oh, i32.remS(i32.divS(get(p0), get(wo)), get(ho)));
  f.set(n, i32.divS(get(p0), i32.mul(get(wo), get(ho))));
}

/** The next output pixel: (n, oh, ow) counts like an odometer. */
function nextPixel(f: Fn, wo: Local, ho: Local, n: Local, oh: Local, ow: Local): void {
  f.set(ow, i32.add(get(ow), i32.const(1)));
  f.if(i32.eq(get(ow), get(wo)), () => {
    f.set(ow, i32.const(0));
    f.set(oh, i32.add(get(oh), i32.const(1)));
    f.if(i32.eq(get(oh), get(ho)), () => {
      f.set(oh, i32.const(0));
      f.set(n, i32.add(get(n), i32.const(1)));
    });
  });
}

/** Copies `count` floats from src to dst (byte addresses): whole vectors, then one by one. */
function copyRun(f: Fn, dst: Local, src: Local, count: Local, j: Local): void {
  f.for(j, i32.const(0), i32.sub(get(count), i32.const(3)), 4, () => f.store('v128', at(get(dst), get(j)), v128.load(at(get(src), get(j)))));
  f.for(j, get(j), get(count), 1, () => f.store('f32', at(get(dst), get(j)), f32.load(at(get(src), get(j)))));
}

/**
 * x [n, h, w, c] into the zeroed middle of out [n, hp, wp, c] at (top, left): the explicit
 * padding that lets every convolution window read contiguous runs.
 */
function padImages(): Fn {
  const f = new Fn('pad_images', Array(10).fill('i32'));
  const [x, out, n, h, w, c, hp, wp, top, left] = f.params;
  const [img, y, j, src, dst, run] = Array.from({ length: 6 }, () => f.local('i32'));
  f.fill(get(out), i32.const(0), i32.shl(i32.mul(i32.mul(i32.mul(get(n), get(hp)), get(wp)), get(c)), i32.const(2)));
  f.set(run, i32.mul(get(w), get(c)));
  f.set(src, get(x));
  f.for(img, i32.const(0), get(n), 1, () =>
    f.for(y, i32.const(0), get(h), 1, () => {
      f.set(dst, at(get(out), i32.mul(i32.add(i32.mul(i32.add(i32.mul(get(img), get(hp)), i32.add(get(y), get(top))), get(wp)), get(left)), get(c))));
      copyRun(f, dst, src, run, j);
      f.set(src, at(get(src), get(run)));
    }),
  );
  return f;
}

/**
 * Rows p0 .. p0+rows of the patch matrix of a convolution over padded images xp [n, hp, wp, c]:
 * row p = (n, oh, ow) holds, for ky = 0..kh−1, the kw·c floats starting at (oh·sh + ky, ow·sw).
 * Each run is copied in whole vectors, so up to 3 floats are read past it and written past it
 * (into the next run, rewritten next, or past the block): callers leave 16 bytes of slack.
 */
function patches(): Fn {
  const f = new Fn('patches', Array(13).fill('i32'));
  const [xp, out, p0, rows, hp, wp, c, ho, wo, kh, kw, sh, sw] = f.params;
  const [r, n, oh, ow, ky, j, src, dst, run, rowBytes] = Array.from({ length: 10 }, () => f.local('i32'));
  f.set(run, i32.mul(get(kw), get(c)));
  f.set(rowBytes, i32.shl(i32.mul(get(wp), get(c)), i32.const(2)));
  firstPixel(f, p0, wo, ho, n, oh, ow);
  f.set(dst, get(out));
  f.for(r, i32.const(0), get(rows), 1, () => {
    f.set(src, at(get(xp), i32.mul(i32.add(i32.mul(i32.add(i32.mul(get(n), get(hp)), i32.mul(get(oh), get(sh))), get(wp)), i32.mul(get(ow), get(sw))), get(c))));
    f.for(ky, i32.const(0), get(kh), 1, () => {
      f.for(j, i32.const(0), get(run), 4, () => f.store('v128', at(get(dst), get(j)), v128.load(at(get(src), get(j)))));
      f.set(dst, at(get(dst), get(run)));
      f.set(src, i32.add(get(src), get(rowBytes)));
    });
    nextPixel(f, wo, ho, n, oh, ow);
  });
  return f;
}

/**
 * The adjoint of `patches`: adds rows p0 .. p0+rows of a patch-matrix gradient (rows `ld`
 * floats apart) into the padded images xp [n, hp, wp, c]; overlapping windows add up.
 */
function addPatches(): Fn {
  const f = new Fn('add_patches', Array(14).fill('i32'));
  const [xp, cols, ld, p0, rows, hp, wp, c, ho, wo, kh, kw, sh, sw] = f.params;
  const [r, n, oh, ow, ky, j, src, dst, run, rowBytes] = Array.from({ length: 10 }, () => f.local('i32'));
  f.set(run, i32.mul(get(kw), get(c)));
  f.set(rowBytes, i32.shl(i32.mul(get(wp), get(c)), i32.const(2)));
  firstPixel(f, p0, wo, ho, n, oh, ow);
  f.for(r, i32.const(0), get(rows), 1, () => {
    f.set(src, at(get(cols), i32.mul(get(r), get(ld))));
    f.set(dst, at(get(xp), i32.mul(i32.add(i32.mul(i32.add(i32.mul(get(n), get(hp)), i32.mul(get(oh), get(sh))), get(wp)), i32.mul(get(ow), get(sw))), get(c))));
    f.for(ky, i32.const(0), get(kh), 1, () => {
      f.for(j, i32.const(0), i32.sub(get(run), i32.const(3)), 4, () =>
        f.store('v128', at(get(dst), get(j)), v128.add(v128.load(at(get(dst), get(j))), v128.load(at(get(src), get(j))))));
      f.for(j, get(j), get(run), 1, () => f.store('f32', at(get(dst), get(j)), f32.add(f32.load(at(get(dst), get(j))), f32.load(at(get(src), get(j))))));
      f.set(src, at(get(src), get(run)));
      f.set(dst, i32.add(get(dst), get(rowBytes)));
    });
    nextPixel(f, wo, ho, n, oh, ow);
  });
  return f;
}

/** out [n, h, w, c] = the window of xp [n, hp, wp, c] at (top, left): padImages undone. */
function cropImages(): Fn {
  const f = new Fn('crop_images', Array(10).fill('i32'));
  const [xp, out, n, h, w, c, hp, wp, top, left] = f.params;
  const [img, y, j, src, dst, run] = Array.from({ length: 6 }, () => f.local('i32'));
  f.set(run, i32.mul(get(w), get(c)));
  f.set(dst, get(out));
  f.for(img, i32.const(0), get(n), 1, () =>
    f.for(y, i32.const(0), get(h), 1, () => {
      f.set(src, at(get(xp), i32.mul(i32.add(i32.mul(i32.add(i32.mul(get(img), get(hp)), i32.add(get(y), get(top))), get(wp)), get(left)), get(c))));
      copyRun(f, dst, src, run, j);
      f.set(dst, at(get(dst), get(run)));
    }),
  );
  return f;
}

/**
 * dx of max pooling (NHWC), given the forward output `max`: each window passes dy to its first
 * cell (row-major) equal to the maximum — the cpu backend's and TensorFlow's tie rule. Windows
 * may overlap (contributions add up) and are clipped at the borders ('same' padding). With
 * `tiled` set, the windows cover the input exactly once (stride = window, no padding, sizes
 * divisible): then each cell is written once and dx needs no zeroing first.
 */
function maxPoolGrad(): Fn {
  const f = new Fn('max_pool_grad', Array(17).fill('i32'));
  const [x, max, dy, dx, n, h, w, c, ho, wo, fh, fw, sh, sw, pt, pl, tiled] = f.params;
  const [b, oh, ow, y0, y1, x0, x1, yy, xx, cc, o, px, pd, rowX, rowD, pixel, line, c4] = Array.from({ length: 18 }, () => f.local('i32'));
  const [m, g, rest, hit] = Array.from({ length: 4 }, () => f.local('v128'));
  const [ms, gs] = Array.from({ length: 2 }, () => f.local('f32'));
  const open = f.local('i32');
  f.set(c4, i32.and(get(c), i32.const(~3)));
  f.set(pixel, i32.shl(get(c), i32.const(2)));
  f.set(line, i32.mul(get(w), get(pixel)));
  f.if(i32.eqz(get(tiled)), () => f.fill(get(dx), i32.const(0), i32.mul(i32.mul(get(n), get(h)), get(line))));
  const clampLo = (e: Expr) => i32.select(e, i32.const(0), i32.gt(e, i32.const(0)));
  const clampHi = (e: Expr, hi: Local) => i32.select(e, get(hi), i32.lt(e, get(hi)));
  /** Visits the window's cells in row-major order with px/pd at channel cc of x and dx. */
  const windowCells = (body: () => void) => {
    const first = i32.add(i32.mul(i32.add(i32.mul(i32.add(i32.mul(get(b), get(h)), get(y0)), get(w)), get(x0)), get(c)), get(cc));
    f.set(rowX, at(get(x), first));
    f.set(rowD, at(get(dx), first));
    f.for(yy, get(y0), get(y1), 1, () => {
      f.set(px, get(rowX));
      f.set(pd, get(rowD));
      f.for(xx, get(x0), get(x1), 1, () => {
        body();
        f.set(px, i32.add(get(px), get(pixel)));
        f.set(pd, i32.add(get(pd), get(pixel)));
      });
      f.set(rowX, i32.add(get(rowX), get(line)));
      f.set(rowD, i32.add(get(rowD), get(line)));
    });
  };
  f.set(o, i32.const(0));
  f.for(b, i32.const(0), get(n), 1, () => {
    f.for(oh, i32.const(0), get(ho), 1, () => {
      const top = i32.sub(i32.mul(get(oh), get(sh)), get(pt));
      f.set(y0, clampLo(top));
      f.set(y1, clampHi(i32.add(top, get(fh)), h));
      f.for(ow, i32.const(0), get(wo), 1, () => {
        const left = i32.sub(i32.mul(get(ow), get(sw)), get(pl));
        f.set(x0, clampLo(left));
        f.set(x1, clampHi(i32.add(left, get(fw)), w));
        f.for(cc, i32.const(0), get(c4), 4, () => {
          f.set(m, v128.load(at(get(max), i32.add(get(o), get(cc)))));
          f.set(g, v128.load(at(get(dy), i32.add(get(o), get(cc)))));
          f.set(rest, v128.ones());
          windowCells(() => {
            f.set(hit, v128.and(v128.eq(v128.load(get(px)), get(m)), get(rest)));
            f.if(
              get(tiled),
              () => f.store('v128', get(pd), v128.and(get(g), get(hit))),
              () => f.store('v128', get(pd), v128.add(v128.load(get(pd)), v128.and(get(g), get(hit)))),
            );
            f.set(rest, v128.andNot(get(rest), get(hit)));
          });
        });
        f.for(cc, get(c4), get(c), 1, () => {
          f.set(ms, f32.load(at(get(max), i32.add(get(o), get(cc)))));
          f.set(gs, f32.load(at(get(dy), i32.add(get(o), get(cc)))));
          f.set(open, i32.const(1));
          windowCells(() => {
            f.if(
              i32.and(get(open), f32.eq(f32.load(get(px)), get(ms))),
              () => {
                f.store('f32', get(pd), f32.select(get(gs), f32.add(f32.load(get(pd)), get(gs)), get(tiled)));
                f.set(open, i32.const(0));
              },
              () => f.if(get(tiled), () => f.store('f32', get(pd), f32.const(0))),
            );
          });
        });
        f.set(o, i32.add(get(o), get(c)));
      });
    });
  });
  return f;
}

/**
 * 2×2 windows at stride 2 that tile the input exactly, with channels a multiple of 4: the
 * common pooling of our students, unrolled, over `rows` rows of output (n·ho). Forward: the
 * maximum of the four cells. Backward: dy goes to the first cell (row-major) equal to the
 * maximum, every dx cell written once. With `sums` ≠ 0 the pooled layer is a ReLU's output
 * (so a window's maximum is 0 exactly when the ReLU let nothing through): dy is zeroed where
 * the maximum is 0, which makes dx the gradient before the ReLU, and sums[j] += Σ of that dy.
 */
function maxPool2x2(grad: boolean): Fn {
  const f = new Fn(grad ? 'max_pool_grad_2x2' : 'max_pool_2x2', Array(grad ? 8 : 5).fill('i32'));
  const [x, out, rows, wo, c] = grad ? [f.params[0], f.params[1], f.params[4], f.params[5], f.params[6]] : f.params;
  const [dy, dx, sums] = grad ? [f.params[2], f.params[3], f.params[7]] : [];
  const [row, col, cc, o, p, pixel, line] = Array.from({ length: 7 }, () => f.local('i32'));
  const [m, g, rest, hit] = Array.from({ length: 4 }, () => f.local('v128'));
  f.set(pixel, i32.shl(get(c), i32.const(2)));
  f.set(line, i32.mul(i32.mul(get(wo), i32.const(2)), get(pixel))); // one input row
  f.set(o, i32.const(0));
  f.set(p, i32.const(0)); // byte offset of the current window's top-left cell
  const cells = [() => get(p), () => i32.add(get(p), get(pixel)), () => i32.add(get(p), get(line)), () => i32.add(i32.add(get(p), get(line)), get(pixel))];
  f.for(row, i32.const(0), get(rows), 1, () => {
    f.for(col, i32.const(0), get(wo), 1, () => {
      f.for(cc, i32.const(0), get(pixel), 16, () => {
        const cell = (base: Local, k: number) => i32.add(i32.add(get(base), cells[k]()), get(cc));
        const pooled = (base: Local) => i32.add(at(get(base), get(o)), get(cc));
        if (!grad) {
          f.store('v128', pooled(out),
            v128.max(v128.max(v128.load(cell(x, 0)), v128.load(cell(x, 1))), v128.max(v128.load(cell(x, 2)), v128.load(cell(x, 3)))));
          return;
        }
        f.set(m, v128.load(pooled(out)));
        f.set(g, v128.load(pooled(dy!)));
        f.if(get(sums!), () => {
          f.set(g, v128.andNot(get(g), v128.eq(get(m), v128.zero())));
          f.store('v128', i32.add(get(sums!), get(cc)), v128.add(v128.load(i32.add(get(sums!), get(cc))), get(g)));
        });
        f.set(rest, v128.ones());
        for (let k = 0; k < 4; k++) {
          f.set(hit, v128.and(v128.eq(v128.load(cell(x, k)), get(m)), get(rest)));
          f.store('v128', cell(dx!, k), v128.and(get(g), get(hit)));
          if (k < 3) f.set(rest, v128.andNot(get(rest), get(hit)));
        }
      });
      f.set(o, i32.add(get(o), get(c)));
      f.set(p, i32.add(get(p), i32.shl(get(pixel), i32.const(1))));
    });
    f.set(p, i32.add(get(p), get(line))); // skip the window's second row
  });
  return f;
}

/**
 * 2×2 max pooling at stride 2 (windows tiling y, channels a multiple of 4) that also records
 * which cell of each window held the maximum first (row-major 0..3, as int32): all the
 * backward pass needs, so y itself can be dropped.
 */
function maxPoolArgmax(): Fn {
  const f = new Fn('max_pool_argmax', Array(6).fill('i32'));
  const [y, out, idx, rows, wo, c] = f.params;
  const [row, col, cc, o, p, pixel, line] = Array.from({ length: 7 }, () => f.local('i32'));
  const cellv = Array.from({ length: 4 }, () => f.local('v128'));
  const [m, k] = [f.local('v128'), f.local('v128')];
  f.set(pixel, i32.shl(get(c), i32.const(2)));
  f.set(line, i32.mul(i32.mul(get(wo), i32.const(2)), get(pixel)));
  f.set(o, i32.const(0));
  f.set(p, get(y));
  const cellAddr = [() => get(p), () => i32.add(get(p), get(pixel)), () => i32.add(get(p), get(line)), () => i32.add(i32.add(get(p), get(line)), get(pixel))];
  f.for(row, i32.const(0), get(rows), 1, () => {
    f.for(col, i32.const(0), get(wo), 1, () => {
      f.for(cc, i32.const(0), get(pixel), 16, () => {
        cellv.forEach((l, i) => f.set(l, v128.load(i32.add(cellAddr[i](), get(cc)))));
        f.set(m, v128.max(v128.max(get(cellv[0]), get(cellv[1])), v128.max(get(cellv[2]), get(cellv[3]))));
        f.store('v128', i32.add(at(get(out), get(o)), get(cc)), get(m));
        // From the last cell to the first, so the first cell equal to the maximum wins.
        f.set(k, v128.splatI32(i32.const(3)));
        for (let i = 2; i >= 0; i--) f.set(k, v128.bitselect(v128.splatI32(i32.const(i)), get(k), v128.eq(get(cellv[i]), get(m))));
        f.store('v128', i32.add(at(get(idx), get(o)), get(cc)), get(k));
      });
      f.set(o, i32.add(get(o), get(c)));
      f.set(p, i32.add(get(p), i32.shl(get(pixel), i32.const(1))));
    });
    f.set(p, i32.add(get(p), get(line)));
  });
  return f;
}

/**
 * Backward of ReLU then 2×2 max pooling from the pooled outputs and max_pool_argmax's cells:
 * the gradient before the ReLU is dy at the recorded cell where the pooled value is not 0
 * (else 0), written for every cell of `rows` output rows; sums[j] += Σ of those dy.
 */
function unpoolReluGrad(): Fn {
  const f = new Fn('unpool_relu_grad', Array(8).fill('i32'));
  const [dy, pooled, idx, dpre, rows, wo, c, sums] = f.params;
  const [row, col, cc, o, p, pixel, line] = Array.from({ length: 7 }, () => f.local('i32'));
  const [g, k] = [f.local('v128'), f.local('v128')];
  f.set(pixel, i32.shl(get(c), i32.const(2)));
  f.set(line, i32.mul(i32.mul(get(wo), i32.const(2)), get(pixel)));
  f.set(o, i32.const(0));
  f.set(p, get(dpre));
  const cellAddr = [() => get(p), () => i32.add(get(p), get(pixel)), () => i32.add(get(p), get(line)), () => i32.add(i32.add(get(p), get(line)), get(pixel))];
  f.for(row, i32.const(0), get(rows), 1, () => {
    f.for(col, i32.const(0), get(wo), 1, () => {
      f.for(cc, i32.const(0), get(pixel), 16, () => {
        const pooledAt = (base: Local) => i32.add(at(get(base), get(o)), get(cc));
        f.set(g, v128.andNot(v128.load(pooledAt(dy)), v128.eq(v128.load(pooledAt(pooled)), v128.zero())));
        f.set(k, v128.load(pooledAt(idx)));
        f.store('v128', i32.add(get(sums), get(cc)), v128.add(v128.load(i32.add(get(sums), get(cc))), get(g)));
        for (let i = 0; i < 4; i++) f.store('v128', i32.add(cellAddr[i](), get(cc)), v128.and(get(g), v128.eqI32(get(k), v128.splatI32(i32.const(i)))));
      });
      f.set(o, i32.add(get(o), get(c)));
      f.set(p, i32.add(get(p), i32.shl(get(pixel), i32.const(1))));
    });
    f.set(p, i32.add(get(p), get(line)));
  });
  return f;
}

/** Loops over `rows` rows of `cols` floats: `vec` on each 4-float block, `one` on the remainder. */
function rowsOfColumns(f: Fn, rows: Local, cols: Local, vec: (r: Local, j: Local) => void, one: (r: Local, j: Local) => void): void {
  const r = f.local('i32');
  const j = f.local('i32');
  f.for(r, i32.const(0), get(rows), 1, () => {
    f.for(j, i32.const(0), i32.sub(get(cols), i32.const(3)), 4, () => vec(r, j));
    f.for(j, get(j), get(cols), 1, () => one(r, j));
  });
}

/**
 * The ReLU layer's backward pass and its bias gradient in one read of dy: dpre = dy where the
 * layer's output y > 0, else 0; sums[j] += Σ_r dpre[r, j] (the caller blocks long sums).
 */
function reluGradSums(): Fn {
  const f = new Fn('relu_grad_sums', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32']);
  const [dy, y, dpre, sums, rows, cols] = f.params;
  const v = f.local('v128');
  const s = f.local('f32');
  const idx = (r: Local, j: Local) => i32.add(i32.mul(get(r), get(cols)), get(j));
  rowsOfColumns(
    f, rows, cols,
    (r, j) => {
      // y ≥ 0 after a ReLU, so y > 0 ⇔ y ≠ 0.
      f.set(v, v128.andNot(v128.load(at(get(dy), idx(r, j))), v128.eq(v128.load(at(get(y), idx(r, j))), v128.zero())));
      f.store('v128', at(get(dpre), idx(r, j)), get(v));
      f.store('v128', at(get(sums), get(j)), v128.add(v128.load(at(get(sums), get(j))), get(v)));
    },
    (r, j) => {
      f.set(s, f32.select(f32.const(0), f32.load(at(get(dy), idx(r, j))), f32.eq(f32.load(at(get(y), idx(r, j))), f32.const(0))));
      f.store('f32', at(get(dpre), idx(r, j)), get(s));
      f.store('f32', at(get(sums), get(j)), f32.add(f32.load(at(get(sums), get(j))), get(s)));
    },
  );
  return f;
}

/** out[r, j] = x[r, j] + bias[j]: tfjs's broadcasting Add of a bias vector. */
function biasAdd(): Fn {
  const f = new Fn('bias_add', ['i32', 'i32', 'i32', 'i32', 'i32']);
  const [x, bias, out, rows, cols] = f.params;
  const idx = (r: Local, j: Local) => i32.add(i32.mul(get(r), get(cols)), get(j));
  rowsOfColumns(
    f, rows, cols,
    (r, j) => f.store('v128', at(get(out), idx(r, j)), v128.add(v128.load(at(get(x), idx(r, j))), v128.load(at(get(bias), get(j))))),
    (r, j) => f.store('f32', at(get(out), idx(r, j)), f32.add(f32.load(at(get(x), idx(r, j))), f32.load(at(get(bias), get(j))))),
  );
  return f;
}

/** sums[j] += Σ_r x[r, j] over `rows` rows (the caller splits long sums into blocks for accuracy). */
function columnSums(): Fn {
  const f = new Fn('column_sums', ['i32', 'i32', 'i32', 'i32']);
  const [x, sums, rows, cols] = f.params;
  const idx = (r: Local, j: Local) => i32.add(i32.mul(get(r), get(cols)), get(j));
  rowsOfColumns(
    f, rows, cols,
    (r, j) => f.store('v128', at(get(sums), get(j)), v128.add(v128.load(at(get(sums), get(j))), v128.load(at(get(x), idx(r, j))))),
    (r, j) => f.store('f32', at(get(sums), get(j)), f32.add(f32.load(at(get(sums), get(j))), f32.load(at(get(x), idx(r, j))))),
  );
  return f;
}

/**
 * One Adam step over `count` parameters, in tfjs's order of float32 operations:
 * m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², w' = w − lr·(m/c₁)/(√(v/c₂) + ε), c = 1 − βᵗ.
 * m and v are updated in place; w' is written to `wOut` (a new tensor: XNNPACK caches packed
 * weights by tensor id, so weights must never change in place).
 */
function adam(): Fn {
  const f = new Fn('adam', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'f32', 'f32', 'f32', 'f32', 'f32', 'f32', 'f32', 'f32']);
  const [w, g, m, v, wOut, count, b1, nb1, b2, nb2, c1, c2, eps, negLr] = f.params;
  const i = f.local('i32');
  const lanes = (type: 'v128' | 'f32') => {
    const V = type === 'v128';
    const ld = (base: Local) => (V ? v128.load(at(get(base), get(i))) : f32.load(at(get(base), get(i))));
    const s = (p: Local): Expr => (V ? v128.splat(get(p)) : get(p));
    const add = V ? v128.add : f32.add;
    const mul = V ? v128.mul : f32.mul;
    const div = V ? v128.div : f32.div;
    const sqrt = V ? v128.sqrt : f32.sqrt;
    const gl = f.local(type);
    const ml = f.local(type);
    const vl = f.local(type);
    return () => {
      f.set(gl, ld(g));
      f.set(ml, add(mul(ld(m), s(b1)), mul(get(gl), s(nb1))));
      f.set(vl, add(mul(ld(v), s(b2)), mul(mul(get(gl), get(gl)), s(nb2))));
      f.store(type, at(get(m), get(i)), get(ml));
      f.store(type, at(get(v), get(i)), get(vl));
      const step = mul(div(div(get(ml), s(c1)), add(sqrt(div(get(vl), s(c2))), s(eps))), s(negLr));
      f.store(type, at(get(wOut), get(i)), add(step, ld(w)));
    };
  };
  const vec = lanes('v128');
  const one = lanes('f32');
  f.for(i, i32.const(0), i32.sub(get(count), i32.const(3)), 4, vec);
  f.for(i, get(i), get(count), 1, one);
  return f;
}

export interface FusedKernels {
  /** C[m, n4] (+)= Aᵀ·B over all register tiles, see gemmTNDriver. */
  gemmTN(a: number, lda: number, b: number, ldb: number, c: number, ldc: number, m: number, n4: number, k: number, acc: number): void;
  padImages(...args: number[]): void;
  addPatches(...args: number[]): void;
  cropImages(...args: number[]): void;
  /** relu?(A·B + bias) over `rows` rows (a multiple of mr), see gemmNN. */
  gemmNN(mr: number, nv: number): (a: number, lda: number, b: number, ldb: number, c: number, ldc: number, k: number, bias: number, relu: number, rows: number) => void;
  maxPoolArgmax(y: number, out: number, idx: number, rows: number, wo: number, c: number): void;
  unpoolReluGrad(dy: number, pooled: number, idx: number, dpre: number, rows: number, wo: number, c: number, sums: number): void;
  patches(...args: number[]): void;
  maxPoolGrad(...args: number[]): void;
  maxPool2x2(x: number, out: number, rows: number, wo: number, c: number): void;
  maxPoolGrad2x2(x: number, max: number, dy: number, dx: number, rows: number, wo: number, c: number, sums: number): void;
  reluGradSums(dy: number, y: number, dpre: number, sums: number, rows: number, cols: number): void;
  biasAdd(x: number, bias: number, out: number, rows: number, cols: number): void;
  columnSums(x: number, sums: number, rows: number, cols: number): void;
  adam(w: number, g: number, m: number, v: number, wOut: number, count: number, ...scalars: number[]): void;
}

let compiled: WebAssembly.Module | undefined;

/** The module, assembled and compiled once per process (about 11 KB; some 50 ms). */
function compile(): WebAssembly.Module {
  if (!compiled) {
    const mod = new Module();
    for (const fn of [addPatches(), cropImages(), maxPoolArgmax(), unpoolReluGrad(), padImages(), patches(), maxPoolGrad(), maxPool2x2(false), maxPool2x2(true), reluGradSums(), biasAdd(), columnSums(), adam()]) mod.add(fn);
    // Callees first: the driver calls the tiles by index.
    const tiles: Fn[][] = [[]];
    for (let mr = 1; mr <= TILE_ROWS; mr++) {
      tiles.push([]);
      for (let nv = 1; nv <= TILE_VECTORS; nv++) {
        tiles[mr][nv] = mod.add(gemmTile(mr, nv));
        mod.add(gemmNN(mr, nv));
      }
    }
    mod.add(gemmTNDriver(tiles));
    compiled = new WebAssembly.Module(assemble(mod.fns));
  }
  return compiled;
}

const instances = new WeakMap<WebAssembly.Memory, FusedKernels>();

/** The kernels bound to one heap (compiled once, instantiated per memory). */
export function fusedKernels(memory: WebAssembly.Memory): FusedKernels {
  let k = instances.get(memory);
  if (!k) {
    const e = new WebAssembly.Instance(compile(), { env: { memory } }).exports as Record<string, (...args: number[]) => void>;
    k = {
      gemmTN: e.gemm_tn,
      padImages: e.pad_images,
      addPatches: e.add_patches,
      cropImages: e.crop_images,
      gemmNN: (mr, nv) => e[`gemm_nn_${mr}x${nv}`],
      maxPoolArgmax: e.max_pool_argmax,
      unpoolReluGrad: e.unpool_relu_grad,
      patches: e.patches,
      maxPoolGrad: e.max_pool_grad,
      maxPool2x2: e.max_pool_2x2,
      maxPoolGrad2x2: e.max_pool_grad_2x2,
      reluGradSums: e.relu_grad_sums,
      biasAdd: e.bias_add,
      columnSums: e.column_sums,
      adam: e.adam,
    };
    instances.set(memory, k);
  }
  return k;
}
