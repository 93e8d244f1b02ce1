//! `plm-train` library: data loading, masking, optimisation, process groups and the training
//! loops behind the `plm-train` command.

pub mod comm;
#[cfg(feature = "mpi")]
pub mod comm_mpi;
pub mod data;
pub mod distill;
pub mod finetune;
pub mod homology_eval;
pub mod interface_prior;
pub mod masking;
pub mod metrics;
pub mod model_dir;
pub mod model_init;
pub mod optim;
pub mod plot;
pub mod pretrain;
pub mod quantize;
pub mod reference;
pub mod run_dir;
pub mod storage;
pub mod taskdata;
pub mod train_loop;
