//! `path_clean(path)`: the shortest path naming the same file, by lexical
//! processing as Go's `path.Clean` does (and as the kubelet resolves
//! hostPath volumes): repeated slashes collapse, `.` elements go, `..`
//! removes the element before it, a trailing slash goes (`//etc/./` →
//! `/etc`, `/var/lib/../../etc` → `/etc`). Rules compare host paths after
//! cleaning, so `//etc/.` cannot pass for something other than `/etc`.
//! Takes a string or a list of strings and returns the same shape; an
//! empty string gives `.`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListBuilder, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

/// Lexically clean a slash-separated path.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PathClean {
    signature: Signature,
}

impl Default for PathClean {
    fn default() -> Self {
        PathClean {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::new_list(DataType::Utf8, true)]),
                ],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for PathClean {
    fn name(&self) -> &str {
        "path_clean"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args[0].clone())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (input, scalar) = match &args.args[0] {
            ColumnarValue::Array(a) => (a.clone(), false),
            ColumnarValue::Scalar(s) => (s.to_array_of_size(1)?, true),
        };
        let out: ArrayRef = match input.data_type() {
            DataType::Utf8 => {
                let mut b = StringBuilder::new();
                for v in input.as_string::<i32>().iter() {
                    b.append_option(v.map(clean));
                }
                Arc::new(b.finish())
            }
            _ => {
                let lists = input.as_list::<i32>();
                let mut b = ListBuilder::new(StringBuilder::new());
                for i in 0..lists.len() {
                    if lists.is_null(i) {
                        b.append(false);
                        continue;
                    }
                    for v in lists.value(i).as_string::<i32>().iter() {
                        b.values().append_option(v.map(clean));
                    }
                    b.append(true);
                }
                Arc::new(b.finish())
            }
        };
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn cleans_like_go() {
        for (path, want) in [
            ("/", "/"),
            ("//", "/"),
            ("/etc/", "/etc"),
            ("//etc/./", "/etc"),
            ("/var/lib/../../etc", "/etc"),
            ("/../etc", "/etc"),
            ("/var/run/docker.sock", "/var/run/docker.sock"),
            (
                "/run//containerd/./containerd.sock",
                "/run/containerd/containerd.sock",
            ),
            ("", "."),
            ("a/../..", ".."),
        ] {
            assert_eq!(clean(path), want, "{path:?}");
        }
    }
}
