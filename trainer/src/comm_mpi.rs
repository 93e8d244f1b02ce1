//! [`Communicator`] over MPI's world communicator (feature `mpi`).

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives, Root};
use mpi::Threading;

use crate::comm::{check_blocks, CommError, Communicator};

/// The MPI world; MPI is finalised when this is dropped.
pub struct MpiCommunicator {
    world: SimpleCommunicator,
    // Declared last: dropped after `world`, and finalises MPI.
    _universe: Universe,
}

impl MpiCommunicator {
    /// Initialises MPI (compute threads never call MPI, so "funneled" suffices).
    pub fn init() -> Result<Self, CommError> {
        let (universe, _) =
            mpi::initialize_with_threading(Threading::Funneled).ok_or(CommError::Init)?;
        Ok(Self {
            world: universe.world(),
            _universe: universe,
        })
    }
}

impl Communicator for MpiCommunicator {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<(), CommError> {
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<(), CommError> {
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn broadcast_f32(&self, buf: &mut [f32]) -> Result<(), CommError> {
        // Lengths first, so a mismatch is an error rather than a hang or a truncation.
        let mut len = [buf.len() as u64];
        self.world.process_at_rank(0).broadcast_into(&mut len[..]);
        if len[0] != buf.len() as u64 {
            return Err(CommError::Mismatch(format!(
                "rank 0 broadcasts {} values, rank {} expects {}",
                len[0],
                self.rank(),
                buf.len()
            )));
        }
        self.world.process_at_rank(0).broadcast_into(buf);
        Ok(())
    }

    fn reduce_scatter_sum_f32(&self, send: &[f32], out: &mut [f32]) -> Result<(), CommError> {
        check_blocks(send.len(), out.len(), self.size())?;
        self.world
            .reduce_scatter_block_into(send, out, SystemOperation::sum());
        Ok(())
    }

    fn all_gather_f32(&self, mine: &[f32], out: &mut [f32]) -> Result<(), CommError> {
        check_blocks(out.len(), mine.len(), self.size())?;
        self.world.all_gather_into(mine, out);
        Ok(())
    }

    fn describe(&self) -> String {
        format!("MPI rank {}/{}", self.rank(), self.size())
    }
}
