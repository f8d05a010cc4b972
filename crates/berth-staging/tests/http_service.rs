//! `StagingService` in-process, through `tower::ServiceExt::oneshot`.

use std::sync::Arc;

use berth_staging::{
    LocalDirStore, MemoryStore, ObjectKey, StagingService, StagingStore, StagingStoreExt, StagingUrls, Token,
    TokenRegistry,
};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Setup {
    service: StagingService,
    token: Token,
    urls: StagingUrls,
}

async fn setup() -> Setup {
    let store = Arc::new(MemoryStore::new());
    store.put_input_json("viz-1", &serde_json::json!({"parameters": {"zoom": 2}})).await.expect("put input");
    for (name, content) in [
        ("digits.txt", &b"0123456789"[..]),
        ("counts.csv", b"a,b\n1,2\n"),
        ("a b.csv", b"spaced"),
        ("plot.png", b"\x89PNG...."),
        ("page.html", b"<script>alert(1)</script>"),
        ("matrix.h5", b"\0\0"),
    ] {
        store.put_bytes("viz-1", &ObjectKey::file(name), Bytes::from_static(content)).await.expect("put file");
    }
    store.put_bytes("other", &ObjectKey::file("secret.csv"), Bytes::from_static(b"theirs")).await.expect("put other");
    let tokens = TokenRegistry::new();
    let token = tokens.issue("viz-1").expect("issue");
    tokens.issue("other").expect("issue other");
    Setup { service: StagingService::new(store, tokens), token, urls: StagingUrls::new("") }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

async fn send(service: &StagingService, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = service
        .clone()
        .oneshot(request.body(http_body_util::Empty::<Bytes>::new()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    Answer { status, headers, body }
}

async fn get(service: &StagingService, path: &str) -> Answer {
    send(service, Method::GET, path, &[]).await
}

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer
        .headers
        .get(name)
        .map(|v| v.to_str().expect("ascii header"))
        .unwrap_or_else(|| panic!("no {name} header in {:?}", answer.headers))
}

#[tokio::test]
async fn valid_token_serves_input_and_files() {
    let s = setup().await;
    let a = get(&s.service, &s.urls.input_url(&s.token)).await;
    assert_eq!(a.status, 200);
    assert_eq!(&a.body[..], br#"{"parameters":{"zoom":2}}"#);
    assert_eq!(header(&a, "content-type"), "application/json");
    assert_eq!(header(&a, "content-length"), a.body.len().to_string());
    assert!(header(&a, "etag").starts_with('"'), "strong etag");
    assert!(header(&a, "last-modified").ends_with(" GMT"));
    assert_eq!(header(&a, "accept-ranges"), "bytes");

    let a = get(&s.service, &s.urls.file_url(&s.token, "counts.csv")).await;
    assert_eq!(a.status, 200);
    assert_eq!(&a.body[..], b"a,b\n1,2\n");
    assert_eq!(header(&a, "content-length"), "8");

    let url = s.urls.file_url(&s.token, "a b.csv");
    assert!(url.ends_with("/files/a%20b.csv"), "{url}");
    let a = get(&s.service, &url).await;
    assert_eq!(a.status, 200);
    assert_eq!(&a.body[..], b"spaced");
}

#[tokio::test]
async fn content_types_follow_the_extension() {
    let s = setup().await;
    for (name, want) in [
        ("counts.csv", "text/csv; charset=utf-8"),
        ("digits.txt", "text/plain; charset=utf-8"),
        ("plot.png", "image/png"),
        ("page.html", "text/html; charset=utf-8"),
        ("matrix.h5", "application/octet-stream"),
    ] {
        let a = get(&s.service, &s.urls.file_url(&s.token, name)).await;
        assert_eq!(a.status, 200, "{name}");
        assert_eq!(header(&a, "content-type"), want, "{name}");
        // A staged page must not run scripts in the host's origin, nor be
        // sniffed into something else.
        assert_eq!(header(&a, "content-security-policy"), "sandbox");
        assert_eq!(header(&a, "x-content-type-options"), "nosniff");
        assert_eq!(header(&a, "referrer-policy"), "no-referrer");
    }
}

#[tokio::test]
async fn every_404_is_the_same() {
    let s = setup().await;
    let tokens = s.service.tokens().clone();
    let revoked = tokens.issue("gone").expect("issue");
    tokens.revoke("gone");
    let unknown = Token::generate();
    let t = s.token.as_str();
    let paths = [
        format!("/_berth/staged/{unknown}/input.json"),
        format!("/_berth/staged/{revoked}/input.json"),
        format!("/_berth/staged/{}/input.json", t.to_ascii_uppercase()),
        format!("/_berth/staged/{}/input.json", &t[1..]),
        "/_berth/staged/not-a-token/input.json".to_owned(),
        format!("/_berth/staged/{t}/files/missing.csv"),
        // Another container's file, with this container's token.
        format!("/_berth/staged/{t}/files/secret.csv"),
        format!("/_berth/staged/{t}/files/%2E%2E"),
        format!("/_berth/staged/{t}/files/..%2Fother%2Ffiles%2Fsecret.csv"),
        format!("/_berth/staged/{t}/files/a%00b"),
        format!("/_berth/staged/{t}/files/%zz"),
        format!("/_berth/staged/{t}/files/"),
        format!("/_berth/staged/{t}/files/a/b"),
        format!("/_berth/staged/{t}/other.json"),
        format!("/_berth/staged/{t}"),
        format!("/_berth/elsewhere/{t}/input.json"),
        "/".to_owned(),
    ];
    let first = get(&s.service, &paths[0]).await;
    assert_eq!(first.status, 404);
    for path in &paths {
        let a = get(&s.service, path).await;
        assert_eq!(a.status, 404, "{path}");
        assert_eq!(a.body, first.body, "{path}");
        assert_eq!(a.headers, first.headers, "{path}");
    }
    // The token of the other container does reach its file.
    let other = tokens.issue("other").expect("issue");
    let a = get(&s.service, &s.urls.file_url(&other, "secret.csv")).await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn revoked_and_removed_containers_are_not_served() {
    let s = setup().await;
    let url = s.urls.input_url(&s.token);
    assert_eq!(get(&s.service, &url).await.status, 200);
    s.service.tokens().revoke("viz-1");
    assert_eq!(get(&s.service, &url).await.status, 404);

    // Re-registering the same token (a host restart) serves it again...
    s.service.tokens().register("viz-1", s.token.clone()).expect("register");
    assert_eq!(get(&s.service, &url).await.status, 200);
    // ...until the container is removed, which also deletes its objects.
    assert!(s.service.remove_container("viz-1").await.expect("remove"));
    assert_eq!(get(&s.service, &url).await.status, 404);
    assert!(s.service.store().list_files("viz-1").await.expect("list").is_empty());
    assert!(s.service.tokens().resolve(s.token.as_str()).is_none());
}

#[tokio::test]
async fn if_none_match_gives_304() {
    let s = setup().await;
    let url = s.urls.file_url(&s.token, "digits.txt");
    let etag = header(&get(&s.service, &url).await, "etag").to_owned();
    let weak = format!("W/{etag}");
    let listed = format!("\"nope\", {etag}");
    for value in [etag.as_str(), weak.as_str(), listed.as_str(), "*"] {
        let a = send(&s.service, Method::GET, &url, &[("if-none-match", value)]).await;
        assert_eq!(a.status, 304, "{value}");
        assert!(a.body.is_empty());
        assert_eq!(header(&a, "etag"), etag);
        let a = send(&s.service, Method::HEAD, &url, &[("if-none-match", value)]).await;
        assert_eq!(a.status, 304, "HEAD {value}");
    }
    let a = send(&s.service, Method::GET, &url, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(&a.body[..], b"0123456789");

    // A new version has a new tag, so the old one no longer matches.
    s.service
        .store()
        .put_bytes("viz-1", &ObjectKey::file("digits.txt"), Bytes::from_static(b"9876543210"))
        .await
        .expect("overwrite");
    let a = send(&s.service, Method::GET, &url, &[("if-none-match", &etag)]).await;
    assert_eq!(a.status, 200);
    assert_ne!(header(&a, "etag"), etag);
}

#[tokio::test]
async fn head_has_headers_and_no_body() {
    let s = setup().await;
    let url = s.urls.file_url(&s.token, "digits.txt");
    let full = get(&s.service, &url).await;
    let a = send(&s.service, Method::HEAD, &url, &[]).await;
    assert_eq!(a.status, 200);
    assert!(a.body.is_empty());
    assert_eq!(header(&a, "content-length"), "10");
    assert_eq!(header(&a, "etag"), header(&full, "etag"));
    assert_eq!(header(&a, "content-type"), "text/plain; charset=utf-8");
    // HEAD ignores Range, as GET-only semantics say.
    let a = send(&s.service, Method::HEAD, &url, &[("range", "bytes=0-1")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(header(&a, "content-length"), "10");
}

#[tokio::test]
async fn single_ranges_give_206() {
    let s = setup().await;
    let url = s.urls.file_url(&s.token, "digits.txt");
    for (range, body, content_range) in [
        ("bytes=2-4", "234", "bytes 2-4/10"),
        ("bytes=7-", "789", "bytes 7-9/10"),
        ("bytes=-3", "789", "bytes 7-9/10"),
        ("bytes=5-100", "56789", "bytes 5-9/10"),
        ("bytes=-100", "0123456789", "bytes 0-9/10"),
        ("bytes=0-0", "0", "bytes 0-0/10"),
    ] {
        let a = send(&s.service, Method::GET, &url, &[("range", range)]).await;
        assert_eq!(a.status, 206, "{range}");
        assert_eq!(std::str::from_utf8(&a.body).expect("utf8"), body, "{range}");
        assert_eq!(header(&a, "content-range"), content_range, "{range}");
        assert_eq!(header(&a, "content-length"), body.len().to_string(), "{range}");
        assert_eq!(header(&a, "content-type"), "text/plain; charset=utf-8");
    }
}

#[tokio::test]
async fn unsatisfiable_ranges_give_416() {
    let s = setup().await;
    let url = s.urls.file_url(&s.token, "digits.txt");
    for range in ["bytes=10-", "bytes=10-20", "bytes=-0", "bytes=99-"] {
        let a = send(&s.service, Method::GET, &url, &[("range", range)]).await;
        assert_eq!(a.status, 416, "{range}");
        assert_eq!(header(&a, "content-range"), "bytes */10", "{range}");
    }
}

#[tokio::test]
async fn other_range_headers_give_the_whole_object() {
    let s = setup().await;
    let url = s.urls.file_url(&s.token, "digits.txt");
    let etag = header(&get(&s.service, &url).await, "etag").to_owned();
    for headers in [
        vec![("range", "bytes=0-1,4-5")],
        vec![("range", "bytes=5-2")],
        vec![("range", "lines=1-2")],
        vec![("range", "bytes=x-")],
        vec![("range", "bytes=2-4"), ("if-range", "\"stale\"")],
    ] {
        let a = send(&s.service, Method::GET, &url, &headers).await;
        assert_eq!(a.status, 200, "{headers:?}");
        assert_eq!(&a.body[..], b"0123456789", "{headers:?}");
    }
    let a = send(&s.service, Method::GET, &url, &[("range", "bytes=2-4"), ("if-range", &etag)]).await;
    assert_eq!(a.status, 206);
    assert_eq!(&a.body[..], b"234");
}

#[tokio::test]
async fn other_methods_give_405() {
    let s = setup().await;
    let url = s.urls.input_url(&s.token);
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS] {
        for path in [url.as_str(), "/nowhere"] {
            let a = send(&s.service, method.clone(), path, &[]).await;
            assert_eq!(a.status, 405, "{method} {path}");
            assert_eq!(header(&a, "allow"), "GET, HEAD");
        }
    }
}

#[tokio::test]
async fn prefix_is_configurable() {
    let s = setup().await;
    let service = s.service.clone().with_prefix("/staging/in/");
    assert_eq!(service.prefix(), "/staging/in");
    let urls = StagingUrls::new("http://10.0.0.5:8000/").with_prefix("staging/in");
    let url = urls.input_url(&s.token);
    assert!(url.starts_with("http://10.0.0.5:8000/staging/in/"), "{url}");
    let path = url.trim_start_matches(urls.public_base());
    assert_eq!(get(&service, path).await.status, 200);
    assert_eq!(get(&service, &s.urls.input_url(&s.token)).await.status, 404);

    // At the root, as behind a router that strips the prefix.
    let service = s.service.clone().with_prefix("");
    let path = format!("/{}/files/digits.txt", s.token);
    assert_eq!(get(&service, &path).await.status, 200);
}

#[test]
fn services_can_be_shared_across_threads() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<StagingService>();
    shareable::<berth_staging::UploadService>();
    shareable::<TokenRegistry>();
}

#[tokio::test]
async fn any_request_body_type_is_accepted() {
    let s = setup().await;
    let url = s.urls.input_url(&s.token);
    let response = s
        .service
        .clone()
        .oneshot(Request::get(&url).body(String::from("ignored")).expect("request"))
        .await
        .expect("infallible");
    assert_eq!(response.status(), 200);
    // Not even `Send` is required of the body.
    let response = s
        .service
        .clone()
        .oneshot(Request::get(&url).body(std::rc::Rc::new(())).expect("request"))
        .await
        .expect("infallible");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn local_dir_objects_are_served_with_ranges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn StagingStore> = Arc::new(LocalDirStore::open(dir.path()).await.expect("open"));
    let content: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    store.put_bytes("disk", &ObjectKey::file("blob.bin"), Bytes::from(content.clone())).await.expect("put");
    let tokens = TokenRegistry::new();
    let token = tokens.issue("disk").expect("issue");
    let service = StagingService::new(store, tokens);
    let url = StagingUrls::new("").file_url(&token, "blob.bin");
    let a = get(&service, &url).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body[..], content[..]);
    let a = send(&service, Method::GET, &url, &[("range", "bytes=300000-700000")]).await;
    assert_eq!(a.status, 206);
    assert_eq!(a.body[..], content[300_000..=700_000]);
    assert_eq!(header(&a, "content-range"), "bytes 300000-700000/1000000");
}
