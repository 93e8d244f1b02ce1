//! Mapping library errors to PostgreSQL errors with SQLSTATE codes.

use pgrx::{ereport, PgLogLevel, PgSqlErrorCode};
use plm_model::{ErrorClass, PlmError};

/// Raises `err` as an SQL `ERROR` with a fitting SQLSTATE. Never returns.
pub fn raise(err: PlmError) -> ! {
    let code = match err.class() {
        ErrorClass::InvalidInput => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorClass::Unsupported => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        ErrorClass::MissingFile => PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
        ErrorClass::Corrupt => PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
        ErrorClass::Io => PgSqlErrorCode::ERRCODE_IO_ERROR,
        ErrorClass::TooLarge => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        ErrorClass::Unavailable => PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
        ErrorClass::Internal => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
    };
    ereport!(PgLogLevel::ERROR, code, format!("pg_plm: {err}"));
    unreachable!("ereport(ERROR) does not return")
}

/// Unwraps a library result or raises it as an SQL error.
pub trait OrRaise<T> {
    /// The value, or an SQL `ERROR`.
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, PlmError> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| raise(e))
    }
}

/// Raises an "undefined object" error (unknown model).
pub fn undefined_object(message: String) -> ! {
    ereport!(
        PgLogLevel::ERROR,
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        format!("pg_plm: {message}")
    );
    unreachable!("ereport(ERROR) does not return")
}

/// The `model` argument of a form that names its model (IMMUTABLE): NULL is an error, since
/// only the forms without a `model` argument may use `plm.default_model`.
pub fn explicit_model(model: Option<&str>) -> &str {
    match model {
        Some(m) => m,
        None => {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "pg_plm: model must not be NULL",
                "Omit the model argument to use plm.default_model."
            );
        }
    }
}
