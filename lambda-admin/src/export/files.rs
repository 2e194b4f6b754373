//! Where an export's files go: the [`ExportFiles`] port, the S3 adapter (AWS, or moto
//! locally through `S3_ENDPOINT`) and an in-memory adapter for unit tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Stores whole objects and hands out time-limited download URLs.
pub trait ExportFiles: Send + Sync {
    fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// A URL that GETs `key` without credentials until `expires_in` has passed.
    fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> impl Future<Output = Result<String, String>> + Send;
}

/// The export bucket through `aws-sdk-s3`, exactly as on AWS. `S3_ENDPOINT` points it at
/// a local S3 (moto) with path-style addressing.
#[derive(Clone, Debug)]
pub struct S3Files {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Files {
    pub async fn from_env(bucket: String, endpoint: Option<String>) -> S3Files {
        let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(e) = endpoint {
            b = b.endpoint_url(e).force_path_style(true);
        }
        S3Files {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket,
        }
    }

    /// Creates the bucket when it is missing (local runs only: on AWS the template owns it).
    pub async fn ensure_bucket(&self) -> Result<(), String> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        self.client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("creating bucket {}: {}", self.bucket, sdk_error(&e)))
    }
}

/// The SDK error's own message (its `Display` is only "service error").
fn sdk_error<E: std::error::Error>(e: &E) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

impl ExportFiles for S3Files {
    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> Result<(), String> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(body.into())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("writing {key}: {}", sdk_error(&e)))
    }

    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String, String> {
        let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires_in)
            .map_err(|e| e.to_string())?;
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(cfg)
            .await
            .map(|r| r.uri().to_owned())
            .map_err(|e| format!("presigning {key}: {}", sdk_error(&e)))
    }
}

/// Objects in memory; URLs are `mem://key?expires=secs`.
#[derive(Clone, Debug, Default)]
pub struct MemoryFiles {
    pub objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    /// Fail every write (a bucket that refuses).
    pub fail: bool,
}

impl MemoryFiles {
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.objects.lock().ok()?.get(key).cloned()
    }
}

impl ExportFiles for MemoryFiles {
    async fn put(&self, key: &str, body: Vec<u8>, _ct: &'static str) -> Result<(), String> {
        if self.fail {
            return Err(format!("writing {key}: refused"));
        }
        self.objects
            .lock()
            .map_err(|_| "poisoned".to_owned())?
            .insert(key.to_owned(), body);
        Ok(())
    }

    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String, String> {
        Ok(format!("mem://{key}?expires={}", expires_in.as_secs()))
    }
}
