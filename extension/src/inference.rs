//! Where a request is computed: by the shared worker when it runs, else in this backend.
//! Both use the same `plm_model::serve::execute`, so the answer is the same either way.

use plm_model::serve::{execute, Output, Request, Task};

use crate::errors::{raise, OrRaise};
use crate::registry::{cache, exec_options, local_registry, model_ref, request_settings};
use crate::worker;

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

fn local(
    model: &plm_model::serve::ModelRef,
    settings: &plm_model::serve::RequestSettings,
    task: &Task,
) -> Output {
    cache(); // applies a changed plm.cache_size_mb
    execute(local_registry(), model, settings, task, &exec_options()).or_raise()
}

/// An answer of an unexpected kind (a bug): an internal error.
pub fn unexpected(output: &Output) -> ! {
    raise(plm_model::PlmError::Remote {
        class: plm_model::ErrorClass::Internal,
        message: format!("unexpected answer from the engine: {}", kind(output)),
    })
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
