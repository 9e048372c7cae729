//! Container image references, as the Docker reference grammar reads them.
//!
//! * `image_registry(image)`: the registry host (and port): `docker.io`
//!   when the first path component is not a host (`nginx`,
//!   `library/nginx`, `bitnami/redis`), else that component, lower-cased
//!   (`gcr.io`, `localhost:5000`, `10.0.0.5:5000`); `index.docker.io` and
//!   `registry-1.docker.io` are `docker.io`.
//! * `image_repository(image)`: registry and path without tag or digest,
//!   with Docker Hub's implicit `library/` (`nginx:1.25` →
//!   `docker.io/library/nginx`).
//!
//! Both take a string or a list of strings (`pod_spec.images`) and return
//! the same shape; NULL stays NULL, an empty string gives NULL.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListBuilder, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

/// The registry and the repository path of an image reference.
pub fn split_image(image: &str) -> Option<(String, String)> {
    let image = image.trim();
    let name = image.split('@').next().unwrap_or(image);
    // A tag follows the last ':' that comes after the last '/'.
    let name = match (name.rfind(':'), name.rfind('/')) {
        (Some(colon), Some(slash)) if colon > slash => &name[..colon],
        (Some(colon), None) => &name[..colon],
        _ => name,
    };
    if name.is_empty() {
        return None;
    }
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_ascii_lowercase(), rest.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    let registry = match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => registry,
    };
    let path = if registry == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    Some((registry, path))
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ImagePart {
    name: &'static str,
    repository: bool,
    signature: Signature,
}

impl ImagePart {
    pub fn registry() -> Self {
        Self::new("image_registry", false)
    }
    pub fn repository() -> Self {
        Self::new("image_repository", true)
    }
    fn new(name: &'static str, repository: bool) -> Self {
        ImagePart {
            name,
            repository,
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::new_list(DataType::Utf8, true)]),
                ],
                Volatility::Immutable,
            ),
        }
    }

    fn part(&self, image: &str) -> Option<String> {
        let (registry, path) = split_image(image)?;
        Some(if self.repository {
            format!("{registry}/{path}")
        } else {
            registry
        })
    }
}

impl ScalarUDFImpl for ImagePart {
    fn name(&self) -> &str {
        self.name
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
                let strings = input.as_string::<i32>();
                let mut b = StringBuilder::with_capacity(strings.len(), 0);
                for v in strings.iter() {
                    b.append_option(v.and_then(|s| self.part(s)));
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
                    let values = lists.value(i);
                    for v in values.as_string::<i32>().iter() {
                        b.values().append_option(v.and_then(|s| self.part(s)));
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
    use super::*;

    fn parts(image: &str) -> (String, String) {
        split_image(image).unwrap()
    }

    #[test]
    fn docker_hub_names() {
        assert_eq!(parts("nginx"), ("docker.io".into(), "library/nginx".into()));
        assert_eq!(
            parts("nginx:1.25"),
            ("docker.io".into(), "library/nginx".into())
        );
        assert_eq!(
            parts("bitnami/redis:7"),
            ("docker.io".into(), "bitnami/redis".into())
        );
        assert_eq!(
            parts("docker.io/library/busybox@sha256:abc"),
            ("docker.io".into(), "library/busybox".into())
        );
        assert_eq!(
            parts("index.docker.io/alpine"),
            ("docker.io".into(), "library/alpine".into())
        );
    }

    #[test]
    fn registry_hosts() {
        assert_eq!(
            parts("gcr.io/google-containers/pause:3.9"),
            ("gcr.io".into(), "google-containers/pause".into())
        );
        assert_eq!(
            parts("localhost:5000/tools/x:1"),
            ("localhost:5000".into(), "tools/x".into())
        );
        assert_eq!(
            parts("10.0.0.5:5000/miner"),
            ("10.0.0.5:5000".into(), "miner".into())
        );
        assert_eq!(
            parts("Registry.Example.COM/app"),
            ("registry.example.com".into(), "app".into())
        );
        assert_eq!(
            parts("123456789012.dkr.ecr.eu-west-1.amazonaws.com/app@sha256:00"),
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
                "app".into()
            )
        );
        assert!(split_image("").is_none());
        assert!(split_image(":latest").is_none());
    }
}
