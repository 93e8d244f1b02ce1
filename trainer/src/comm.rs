//! Process groups for data-parallel training: one trait, a single-process no-op and (behind
//! the `mpi` feature) MPI, chosen at start-up from the launcher's environment.

use candle_core::{Device, Tensor, Var};

use crate::optim::FlatLayout;

/// Errors of collective communication.
#[derive(Debug, thiserror::Error)]
pub enum CommError {
    /// Launched by a parallel launcher, but this binary cannot join the group.
    #[error(
        "launched as one of {size} processes (by mpirun?) but plm-train was built without MPI; \
         rebuild with `cargo build --release -p plm-train --features mpi`"
    )]
    NotBuiltWithMpi {
        /// Processes the launcher started.
        size: usize,
    },
    /// MPI could not be initialised.
    #[error("MPI initialisation failed (already initialised?)")]
    Init,
    /// Ranks disagree about the shape of what is being reduced.
    #[error("ranks disagree: {0}")]
    Mismatch(String),
    /// A tensor could not be moved to or from the host.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// A group of processes training one model together.
pub trait Communicator {
    /// This process's index, `0..size()`.
    fn rank(&self) -> usize;
    /// Processes in the group.
    fn size(&self) -> usize;
    /// Element-wise sum over all ranks, in place.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<(), CommError>;
    /// Element-wise sum over all ranks, in place.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<(), CommError>;
    /// Overwrites `buf` on every rank with rank 0's.
    fn broadcast_f32(&self, buf: &mut [f32]) -> Result<(), CommError>;
    /// Element-wise sum over all ranks of `send` (length `size() × out.len()`), of which this
    /// rank receives block `rank()` into `out`.
    fn reduce_scatter_sum_f32(&self, send: &[f32], out: &mut [f32]) -> Result<(), CommError>;
    /// Every rank's `mine` (equal lengths), concatenated in rank order into `out`.
    fn all_gather_f32(&self, mine: &[f32], out: &mut [f32]) -> Result<(), CommError>;
    /// Whether this rank writes checkpoints, metrics and progress.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }
    /// A short description for logs, e.g. `mpi rank 1/4`.
    fn describe(&self) -> String;
}

/// One process: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum_f32(&self, _: &mut [f32]) -> Result<(), CommError> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<(), CommError> {
        Ok(())
    }
    fn broadcast_f32(&self, _: &mut [f32]) -> Result<(), CommError> {
        Ok(())
    }
    fn reduce_scatter_sum_f32(&self, send: &[f32], out: &mut [f32]) -> Result<(), CommError> {
        check_blocks(send.len(), out.len(), 1)?;
        out.copy_from_slice(send);
        Ok(())
    }
    fn all_gather_f32(&self, mine: &[f32], out: &mut [f32]) -> Result<(), CommError> {
        check_blocks(out.len(), mine.len(), 1)?;
        out.copy_from_slice(mine);
        Ok(())
    }
    fn describe(&self) -> String {
        "single process".into()
    }
}

/// Processes started by the launcher whose environment this is (Open MPI, MPICH/Hydra,
/// Slurm's PMI), or `None` outside a parallel launch.
pub fn launched_size() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_SIZE",
        "MPI_LOCALNRANKS",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok()?.parse::<usize>().ok())
}

/// The communicator for this process: MPI when launched by mpirun (with the `mpi` feature),
/// otherwise a single process. A parallel launch of a binary without MPI is an error rather
/// than N unsynchronised copies writing the same run directory.
pub fn from_environment() -> Result<Box<dyn Communicator>, CommError> {
    match launched_size() {
        #[cfg(feature = "mpi")]
        Some(_) => Ok(Box::new(crate::comm_mpi::MpiCommunicator::init()?)),
        #[cfg(not(feature = "mpi"))]
        Some(size) if size > 1 => Err(CommError::NotBuiltWithMpi { size }),
        _ => Ok(Box::new(SingleProcess)),
    }
}

/// That a buffer of `whole` values splits into `size` blocks of `block`.
pub(crate) fn check_blocks(whole: usize, block: usize, size: usize) -> Result<(), CommError> {
    if whole != block * size {
        return Err(CommError::Mismatch(format!(
            "{whole} values do not split into {size} blocks of {block}"
        )));
    }
    Ok(())
}

/// Sums gradients over all ranks; returns this rank's shard of the padded flat sum (the whole
/// vector when `layout` has one shard: an all-reduce; otherwise a reduce-scatter, ZeRO stage
/// 1). Ranks must agree on which gradients exist; `extra` (loss terms, counts) is summed too.
pub fn reduce_gradients(
    comm: &dyn Communicator,
    layout: &FlatLayout,
    grads: &[Option<Tensor>],
    extra: &mut [f64],
    device: &Device,
) -> Result<Tensor, CommError> {
    let flat = layout.flatten(grads, device)?;
    if comm.size() == 1 {
        return Ok(flat);
    }
    // Which gradients exist, summed: each must be present on all ranks or on none.
    let mut scalars: Vec<f64> = grads
        .iter()
        .map(|g| if g.is_some() { 1.0 } else { 0.0 })
        .chain(extra.iter().copied())
        .collect();
    comm.all_reduce_sum_f64(&mut scalars)?;
    let size = comm.size() as f64;
    for (i, (g, &n)) in grads.iter().zip(&scalars).enumerate() {
        let expected = if g.is_some() { size } else { 0.0 };
        if n != expected {
            return Err(CommError::Mismatch(format!(
                "gradient {i} exists on {n} of {size} ranks"
            )));
        }
    }
    extra.copy_from_slice(&scalars[grads.len()..]);
    let mut host = flat.to_vec1::<f32>()?;
    if layout.shards() == 1 {
        comm.all_reduce_sum_f32(&mut host)?;
        return Ok(Tensor::from_vec(host, layout.padded(), device)?);
    }
    if layout.shards() != comm.size() {
        return Err(CommError::Mismatch(format!(
            "{} optimizer shards on {} ranks",
            layout.shards(),
            comm.size()
        )));
    }
    let mut mine = vec![0f32; layout.padded() / layout.shards()];
    comm.reduce_scatter_sum_f32(&host, &mut mine)?;
    host.clear();
    let n = mine.len();
    Ok(Tensor::from_vec(mine, n, device)?)
}

/// The padded flat vector from every rank's shard (the shard itself with one shard).
pub fn gather_shards(
    comm: &dyn Communicator,
    layout: &FlatLayout,
    shard: &Tensor,
) -> Result<Tensor, CommError> {
    if layout.shards() == 1 {
        return Ok(shard.clone());
    }
    let mine = shard.to_vec1::<f32>()?;
    let mut all = vec![0f32; layout.padded()];
    comm.all_gather_f32(&mine, &mut all)?;
    Ok(Tensor::from_vec(all, layout.padded(), shard.device())?)
}

/// Sums one f64 per rank into a vector indexed by rank (every rank gets all of them).
pub fn gather_per_rank(comm: &dyn Communicator, value: f64) -> Result<Vec<f64>, CommError> {
    let mut all = vec![0f64; comm.size()];
    all[comm.rank()] = value;
    comm.all_reduce_sum_f64(&mut all)?;
    Ok(all)
}

/// Makes every rank's variables equal to rank 0's (after initialisation or loading).
pub fn broadcast_vars(comm: &dyn Communicator, vars: &[(String, Var)]) -> Result<(), CommError> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mut flat = Vec::new();
    for (_, v) in vars {
        flat.extend(
            v.as_tensor()
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?,
        );
    }
    comm.broadcast_f32(&mut flat)?;
    let mut offset = 0;
    for (_, v) in vars {
        let n = v.elem_count();
        let t = Tensor::from_slice(&flat[offset..offset + n], v.shape(), v.device())?
            .to_dtype(v.dtype())?;
        v.set(&t)?;
        offset += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_process_is_the_identity() {
        let dev = Device::Cpu;
        let a = Var::new(&[1f32, 2.0], &dev).unwrap();
        let b = Var::new(&[5f32], &dev).unwrap();
        let layout = FlatLayout::new(&[("a".into(), a), ("b".into(), b)], 1);
        let grads = vec![Some(Tensor::new(&[1f32, 2.0], &dev).unwrap()), None];
        let mut extra = [3.0];
        let flat = reduce_gradients(&SingleProcess, &layout, &grads, &mut extra, &dev).unwrap();
        assert_eq!(flat.to_vec1::<f32>().unwrap(), [1.0, 2.0, 0.0]);
        assert_eq!(extra, [3.0]);
        assert_eq!(
            gather_shards(&SingleProcess, &layout, &flat)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            [1.0, 2.0, 0.0]
        );
        assert_eq!(gather_per_rank(&SingleProcess, 4.0).unwrap(), [4.0]);
        assert!(SingleProcess.is_root());
    }
}
