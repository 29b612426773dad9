/// Macro for running a function in parallel.
#[cfg(feature = "multi-threads")]
#[macro_export(local_inner_macros)]
macro_rules! run_par {
    (
        $func:expr
    ) => {{
        use rayon::prelude::*;

        #[allow(clippy::redundant_closure_call)]
        rayon::scope(|_| $func())
    }};
}

/// Macro for running a function in parallel.
#[cfg(not(feature = "multi-threads"))]
#[macro_export(local_inner_macros)]
macro_rules! run_par {
    (
        $func:expr
    ) => {{ $func() }};
}

/// Macro for iterating in parallel.
#[cfg(not(feature = "multi-threads"))]
#[macro_export(local_inner_macros)]
macro_rules! iter_par {
    (
        $iter:expr
    ) => {{ $iter }};
}

/// Macro for iterating in parallel.
#[cfg(feature = "multi-threads")]
#[macro_export(local_inner_macros)]
macro_rules! iter_par {
    (
        $iter:expr
    ) => {{ $iter.into_par_iter() }};
}

/// Macro for iterating in parallel.
#[cfg(feature = "multi-threads")]
#[macro_export(local_inner_macros)]
macro_rules! iter_slice_par {
    (
        $slice:expr
    ) => {{ $slice.into_par_iter() }};
}

/// Macro for iterating in parallel.
#[cfg(not(feature = "multi-threads"))]
#[macro_export(local_inner_macros)]
macro_rules! iter_slice_par {
    (
        $slice:expr
    ) => {{ $slice.iter() }};
}

/// Macro for iterating over a range in parallel.
#[cfg(feature = "multi-threads")]
#[macro_export(local_inner_macros)]
macro_rules! iter_range_par {
    (
        $start:expr, $end:expr
    ) => {{ ($start..$end).into_par_iter() }};
}

/// Macro for iterating over a range in parallel.
#[cfg(not(feature = "multi-threads"))]
#[macro_export(local_inner_macros)]
macro_rules! iter_range_par {
    (
        $start:expr, $end:expr
    ) => {{ ($start..$end) }};
}

/// imagebert patch 7: element count from which an element-wise kernel is split into blocks that
/// run on the rayon threads (`multi-threads` feature); below it, handing work to another thread
/// costs more than it saves.
pub(crate) const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// imagebert patch 7: a pointer into a buffer that the blocks of [`for_each_block`] share; each
/// block reads and writes only its own range of it.
#[derive(Clone, Copy)]
pub(crate) struct BlockPtr<T>(*mut T);

// SAFETY: blocks touch disjoint ranges, so sending the base pointer to another thread is sound
// wherever the unsplit kernel was.
unsafe impl<T> Send for BlockPtr<T> {}
unsafe impl<T> Sync for BlockPtr<T> {}

impl<T> BlockPtr<T> {
    /// Wraps a buffer's base pointer.
    pub(crate) fn new(ptr: *const T) -> Self {
        Self(ptr as *mut T)
    }

    /// The slice `[start, end)` of the buffer, read-only.
    ///
    /// # Safety
    /// `end` must not pass the buffer's end, and no block may write this range meanwhile except
    /// through the same positions (the in-place kernels read and write each element once).
    pub(crate) unsafe fn slice<'a>(self, start: usize, end: usize) -> &'a [T] {
        unsafe { core::slice::from_raw_parts(self.0.add(start), end - start) }
    }

    /// The slice `[start, end)` of the buffer, writable.
    ///
    /// # Safety
    /// As [`BlockPtr::slice`]; blocks must be disjoint.
    pub(crate) unsafe fn slice_mut<'a>(self, start: usize, end: usize) -> &'a mut [T] {
        unsafe { core::slice::from_raw_parts_mut(self.0.add(start), end - start) }
    }
}

/// imagebert patch 7: runs `kernel(start, end)` over `[0, len)`: in blocks (multiples of 1,024
/// elements, so aligned kernels stay aligned) on the rayon threads when `len` reaches
/// [`PARALLEL_MIN_ELEMENTS`], in one call otherwise. The result does not depend on the split.
pub(crate) fn for_each_block(len: usize, kernel: impl Fn(usize, usize) + Send + Sync) {
    #[cfg(feature = "multi-threads")]
    {
        let threads = rayon::current_num_threads();
        if len >= PARALLEL_MIN_ELEMENTS && threads > 1 {
            use rayon::prelude::*;
            let block = len.div_ceil(threads * 2).next_multiple_of(1024);
            let blocks = len.div_ceil(block);
            (0..blocks)
                .into_par_iter()
                .for_each(|b| kernel(b * block, ((b + 1) * block).min(len)));
            return;
        }
    }
    kernel(0, len)
}

/// imagebert patch 7: `array.mapv_into(f)` in blocks on the rayon threads when the array is large
/// and contiguous: in place when the buffer is not shared, into a new buffer otherwise.
pub(crate) fn map_elements<E: Copy + Send + Sync>(
    array: crate::SharedArray<E>,
    f: impl Fn(E) -> E + Send + Sync,
) -> crate::SharedArray<E> {
    if array.len() < PARALLEL_MIN_ELEMENTS || array.as_slice_memory_order().is_none() {
        return array.mapv_into(f).into_shared();
    }
    if array.is_unique() {
        let mut owned = array.into_owned();
        let slice = owned.as_slice_memory_order_mut().expect("contiguous");
        let ptr = BlockPtr::new(slice.as_mut_ptr());
        for_each_block(slice.len(), |start, end| {
            // SAFETY: disjoint blocks of one buffer.
            for value in unsafe { ptr.slice_mut(start, end) } {
                *value = f(*value);
            }
        });
        return owned.into_shared();
    }
    let input = array.as_slice_memory_order().expect("contiguous");
    let mut output = alloc::vec::Vec::<E>::with_capacity(input.len());
    let (in_ptr, out_ptr) = (BlockPtr::new(input.as_ptr()), BlockPtr::new(output.as_mut_ptr()));
    for_each_block(input.len(), |start, end| {
        // SAFETY: disjoint blocks; the output has capacity for every element, and each is
        // written exactly once before `set_len` below.
        let (src, dst) = unsafe { (in_ptr.slice(start, end), out_ptr.slice_mut(start, end)) };
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f(*s);
        }
    });
    // SAFETY: every element was written above.
    unsafe { output.set_len(input.len()) };
    // Same shape and strides as the input, whose buffer was contiguous in memory order.
    let strides: alloc::vec::Vec<usize> = array.strides().iter().map(|s| *s as usize).collect();
    use ndarray::ShapeBuilder;
    ndarray::ArrayD::from_shape_vec(array.raw_dim().strides(ndarray::IxDyn(&strides)), output)
        .expect("the input's shape and strides fit its own length")
        .into_shared()
}

/// imagebert patch 7: `f` element by element over two large arrays of the same shape (in any
/// layouts), or where one broadcasts to the other, on the rayon threads. `None` when the arrays
/// are small, when both sides need broadcasting, or without `multi-threads`: the caller then
/// uses ndarray's single-threaded operators, as upstream does for every such case.
pub(crate) fn zip_map_large<E: Copy + Send + Sync>(
    lhs: &crate::SharedArray<E>,
    rhs: &crate::SharedArray<E>,
    f: impl Fn(E, E) -> E + Send + Sync,
) -> Option<crate::SharedArray<E>> {
    #[cfg(feature = "multi-threads")]
    {
        if lhs.len().max(rhs.len()) < PARALLEL_MIN_ELEMENTS {
            return None;
        }
        let (lhs, rhs) = if lhs.shape() == rhs.shape() {
            (lhs.view(), rhs.view())
        } else if let Some(rhs) = rhs.broadcast(lhs.raw_dim()) {
            (lhs.view(), rhs)
        } else if let Some(lhs) = lhs.broadcast(rhs.raw_dim()) {
            (lhs, rhs.view())
        } else {
            return None;
        };
        Some(
            ndarray::Zip::from(&lhs)
                .and(&rhs)
                .par_map_collect(|&a, &b| f(a, b))
                .into_shared(),
        )
    }
    #[cfg(not(feature = "multi-threads"))]
    {
        let _ = (lhs, rhs, f);
        None
    }
}

/// imagebert patch 10: `f` over every lane of `array` along `dim` (keeping `dim` with length 1):
/// on the rayon threads when the array is large, one lane per task group; each lane is reduced by
/// the same code either way, so results do not depend on the split.
pub(crate) fn reduce_lanes<E: Copy + Send + Sync>(
    array: &crate::SharedArray<E>,
    dim: usize,
    f: impl Fn(ndarray::ArrayView1<'_, E>) -> E + Send + Sync,
) -> crate::SharedArray<E> {
    let lanes = ndarray::Zip::from(array.lanes(ndarray::Axis(dim)));
    #[cfg(feature = "multi-threads")]
    let reduced = if array.len() >= PARALLEL_MIN_ELEMENTS {
        lanes.par_map_collect(f)
    } else {
        lanes.map_collect(f)
    };
    #[cfg(not(feature = "multi-threads"))]
    let reduced = lanes.map_collect(f);
    // The lanes' output may be laid out in any order (it follows the input's), so the reduced
    // axis is put back as a new axis of length 1 rather than by a reshape.
    reduced.insert_axis(ndarray::Axis(dim)).into_shared()
}
