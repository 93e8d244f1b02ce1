//! A two-dimensional `real[]` result (residues × features).

use pgrx::prelude::*;
use pgrx::{pg_sys, IntoDatum};

/// Row-major matrix returned to SQL as a 2-D `real[]`.
pub struct RealMatrix {
    /// Rows (residues).
    pub rows: usize,
    /// Columns (features).
    pub cols: usize,
    /// `rows × cols` values.
    pub data: Vec<f32>,
}

impl_sql_translatable!(RealMatrix, "real[]");

impl IntoDatum for RealMatrix {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let mut elems: Vec<pg_sys::Datum> =
            self.data.iter().filter_map(|v| v.into_datum()).collect();
        let mut dims = [self.rows as i32, self.cols as i32];
        let mut lbs = [1i32, 1i32];
        // SAFETY: `elems` holds rows*cols float4 datums (by value, 4 bytes, int alignment);
        // construct_md_array copies them into a palloc'd array in the current memory context.
        let array = unsafe {
            pg_sys::construct_md_array(
                elems.as_mut_ptr(),
                std::ptr::null_mut(),
                2,
                dims.as_mut_ptr(),
                lbs.as_mut_ptr(),
                pg_sys::FLOAT4OID,
                4,
                true,
                pg_sys::TYPALIGN_INT as std::ffi::c_char,
            )
        };
        Some(pg_sys::Datum::from(array))
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::FLOAT4ARRAYOID
    }
}

// SAFETY: the datum returned is the array built by `into_datum`, handed straight to the caller.
unsafe impl pgrx::callconv::BoxRet for RealMatrix {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        match self.into_datum() {
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}
