//! Where a request is computed: by the isolated inference server (the default), or in this
//! backend when a superuser turned `plm.use_worker` off or `plm.worker_fallback` allows it.
//! Both use the same `plm_serve::execute`, so the answer is the same either way.

use plm_serve::{execute, ModelRef, Output, Request, RequestSettings, Task};

use crate::errors::{raise, OrRaise};
use crate::registry::{cache, exec_options, local_registry, model_ref, request_settings};
use crate::server as worker;

/// Computes `task` with `model` (NULL: the default model).
pub fn run(model: Option<&str>, task: Task) -> Output {
    let model = model_ref(model);
    let settings = request_settings();
    if worker::active() {
        let request = Request::Compute {
            model,
            settings,
            task,
        };
        match worker::call(&request) {
            Ok(output) => return output,
            Err(e) if worker::fall_back(&e) => {
                pgrx::notice!(
                    "pg_plm: {e}; computing in this backend (plm.worker_fallback = local)"
                );
                let Request::Compute {
                    model,
                    settings,
                    task,
                } = request
                else {
                    unreachable!("built above")
                };
                return local(&model, &settings, &task);
            }
            Err(e) => raise(e),
        }
    }
    local(&model, &settings, &task)
}

fn local(model: &ModelRef, settings: &RequestSettings, task: &Task) -> Output {
    cache(); // applies a changed plm.cache_size_mb
    execute(local_registry(), model, settings, task, &exec_options()).or_raise()
}

/// An answer of an unexpected kind (a bug): an internal error.
pub fn unexpected(output: &Output) -> ! {
    raise(plm_model::PlmError::Internal(format!(
        "unexpected answer from the engine: {}",
        kind(output)
    )))
}

fn kind(output: &Output) -> &'static str {
    match output {
        Output::Vectors(_) => "vectors",
        Output::Matrices(_) => "matrices",
        Output::Functions(_) => "function terms",
        Output::Scores(_) => "scores",
        Output::Sites(_) => "binding sites",
        Output::Stats(_) => "statistics",
        Output::Cleared(_) => "cache count",
    }
}
