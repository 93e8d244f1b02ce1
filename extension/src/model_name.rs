//! The `model` argument of the function forms that name their model, typed SQL `name`.
//!
//! Each prediction function has two forms: one without `model` (STABLE: it reads
//! `plm.default_model`) and one with `model` right after the sequence argument(s) (IMMUTABLE:
//! its value depends on its arguments alone, as generated columns, expression indexes and
//! distributed planners require; PostgreSQL's own `to_tsvector(regconfig, text)` versus
//! `to_tsvector(text)` is the precedent). The `name` type keeps positional calls of the first
//! form unambiguous: an untyped literal in second place, as in `plm_function(seq, 'go_mf')`,
//! resolves to `text` (the preferred string type), so it is the ontology; `model => 'x'` or a
//! `text` value (implicitly cast to `name`) selects the second form.

use std::ffi::CStr;

use pgrx::callconv::{Arg, ArgAbi};
use pgrx::nullable::Nullable;
use pgrx::pg_sys;
use pgrx::{impl_sql_translatable, FromDatum};

/// A model name given as an argument.
pub struct ModelName(pub String);

impl_sql_translatable!(ModelName, arg_only = "name");

impl FromDatum for ModelName {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        let name = datum.cast_mut_ptr::<pg_sys::NameData>();
        // SAFETY: a non-null `name` datum points to a NUL-padded NAMEDATALEN buffer.
        let text = unsafe { CStr::from_ptr((*name).data.as_ptr()) };
        Some(ModelName(text.to_string_lossy().into_owned()))
    }
}

// SAFETY: reads the argument through `FromDatum` as pgrx does for its own by-reference types.
unsafe impl<'fcx> ArgAbi<'fcx> for ModelName {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: forwarded from the caller's contract.
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

/// The model an IMMUTABLE form was called with (NULL or empty is an error: only the forms
/// without `model` may use `plm.default_model`).
pub fn given(model: Option<ModelName>) -> String {
    let name = crate::errors::explicit_model(model.as_ref().map(|m| m.0.as_str()));
    if name.trim().is_empty() {
        crate::errors::raise(plm_model::PlmError::InvalidArgument(
            "model name is empty; omit the model argument to use plm.default_model".into(),
        ));
    }
    name.to_string()
}
