//! Box operations for the detector, with torchvision semantics and `[x1, y1, x2, y2]` pixel boxes.
//!
//! - [`boxes`]: box coder (detectron2 `Box2BoxTransform` / torchvision `BoxCoder`), clipping,
//!   area, IoU and small-box removal (`torchvision.ops.boxes`).
//! - [`nms`]: `torchvision.ops.nms` and `batched_nms`.
//! - [`roi_align`]: `torchvision.ops.roi_align`, run on the Burn device.
//!
//! `tests/torchvision_ops.rs` checks them against outputs recorded from torchvision by
//! `tools/torchvision_goldens.py`.
pub mod boxes;
pub mod nms;
pub mod roi_align;
