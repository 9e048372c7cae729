//! Small helpers for building the Arrow columns of the source tables.

use std::sync::Arc;

use arrow::array::NullBufferBuilder;
use arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, ListBuilder, StringBuilder, StructArray,
    TimestampNanosecondBuilder,
};
use arrow::datatypes::Fields;

use super::strings::Str;

/// Assemble a struct column from finished children and a validity buffer.
pub fn struct_array(
    fields: Fields,
    children: Vec<ArrayRef>,
    validity: &mut NullBufferBuilder,
) -> ArrayRef {
    Arc::new(StructArray::new(fields, children, validity.finish()))
}

/// A UTC nanosecond timestamp column builder.
pub fn timestamps(capacity: usize) -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::with_capacity(capacity).with_timezone("UTC")
}

/// Finish a timestamp builder, keeping its UTC time zone.
pub fn finish_ts(b: &mut TimestampNanosecondBuilder) -> ArrayRef {
    Arc::new(b.finish().with_timezone("UTC"))
}

pub fn finish_str(b: &mut StringBuilder) -> ArrayRef {
    Arc::new(b.finish())
}

pub fn finish_list(b: &mut ListBuilder<StringBuilder>) -> ArrayRef {
    Arc::new(b.finish())
}

pub fn finish_i64(b: &mut Int64Builder) -> ArrayRef {
    Arc::new(b.finish())
}

pub fn finish_i32(b: &mut Int32Builder) -> ArrayRef {
    Arc::new(b.finish())
}

/// Append an optional string.
pub fn put_str(b: &mut StringBuilder, v: Option<&str>) {
    match v {
        Some(v) => b.append_value(v),
        None => b.append_null(),
    }
}

/// Append an optional list of strings.
pub fn put_list(b: &mut ListBuilder<StringBuilder>, v: Option<&[Str<'_>]>) {
    match v {
        Some(items) => {
            for item in items {
                b.values().append_value(item.as_str());
            }
            b.append(true);
        }
        None => b.append(false),
    }
}
