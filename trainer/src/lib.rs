//! `plm-train` library: data loading, masking, optimisation and the training loops behind the
//! `plm-train` command.

pub mod data;
pub mod masking;
pub mod model_init;
pub mod optim;
pub mod pretrain;
