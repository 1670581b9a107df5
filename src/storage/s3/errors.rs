//! How S3 request failures are worded and told apart.
//!
//! `err_text` turns an SDK error into the one line that goes into our messages: the
//! store's `Code: message` when it sent one, else the HTTP status of its error response,
//! else the SDK's full error context (connection refused, timeout, credentials...). The
//! other functions classify failures the storage acts on instead of reporting them.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

type S3Error<E> = SdkError<E, HttpResponse>;

/// The one-line description of a failed request used in every S3 error message.
pub(super) fn err_text<E>(e: &S3Error<E>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    if let Some(code) = e.as_service_error().and_then(|s| s.code()) {
        let msg = e.as_service_error().and_then(|s| s.message()).unwrap_or("");
        return format!("{code}: {msg}")
            .trim_end_matches([':', ' '])
            .to_string();
    }
    if let Some(c) = service_status(e) {
        return format!("HTTP {c}");
    }
    format!("{}", DisplayErrorContext(e))
}

/// The HTTP status of the store's error response (`None` when the request did not get
/// as far as an answer the SDK took for an error response).
fn service_status<E>(e: &S3Error<E>) -> Option<u16> {
    match e {
        SdkError::ServiceError(se) => Some(se.raw().status().as_u16()),
        _ => None,
    }
}

/// The object (or the bucket) is not there: `NoSuchKey`/`NotFound`, or a bare 404 (HEAD
/// responses have no body to carry a code).
pub(super) fn is_not_found<E: ProvideErrorMetadata>(e: &S3Error<E>) -> bool {
    if let Some(se) = e.as_service_error() {
        if matches!(se.code(), Some("NoSuchKey") | Some("NotFound")) {
            return true;
        }
    }
    service_status(e) == Some(404)
}

/// A conditional request (`If-None-Match: *`) found an object already there.
pub(super) fn is_precondition_failed<E: ProvideErrorMetadata>(e: &S3Error<E>) -> bool {
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
    code == "PreconditionFailed" || service_status(e) == Some(412)
}

/// The store answered 200 without an error code, but the SDK could not parse the body
/// (moto 5 names the root element of its CompleteMultipartUpload answer
/// `CompleteMultipartUploadResponse`): the request did succeed.
pub(super) fn is_unparsed_success<E: ProvideErrorMetadata>(e: &S3Error<E>) -> bool {
    e.raw_response().map(|r| r.status().as_u16()) == Some(200)
        && e.as_service_error().and_then(|s| s.code()).is_none()
}
