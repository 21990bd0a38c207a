//! The web service over real HTTP, on port 0.

use flowforge_web::{Application, WebSettings, CONTENT_SECURITY_POLICY};

async fn spawn() -> String {
    let settings = WebSettings::from_source(flowforge_platform::Source::from_vars([(
        "FLOWFORGE_WEB_ADDR".to_string(),
        "127.0.0.1:0".to_string(),
    )]))
    .expect("settings");
    let app = Application::build(&settings).await.expect("build");
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    base
}

#[tokio::test]
async fn serves_the_page_with_a_strict_policy_and_revalidation() {
    let base = spawn().await;
    let client = reqwest::Client::new();
    let page = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html");
    assert_eq!(page.headers()["content-security-policy"], CONTENT_SECURITY_POLICY);
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let etag = page.headers()["etag"].clone();
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/app.js">"#));
    assert!(!html.contains("<script>"), "no inline script");

    let again = client.get(format!("{base}/")).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(again.status(), 304);

    let js = client.get(format!("{base}/app.js")).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.headers()["content-type"].to_str().unwrap().contains("javascript"));
}

#[tokio::test]
async fn unknown_paths_are_404_and_health_answers() {
    let base = spawn().await;
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{base}/nope.js")).send().await.unwrap().status(), 404);
    assert_eq!(client.get(format!("{base}/../Cargo.toml")).send().await.unwrap().status(), 404);
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), r#"{"status":"healthy"}"#);
}

/// Issue 5's budget: all the JavaScript and CSS there is, as served compressed, stays
/// under 150 KB (so the first load, a subset of it, does too).
#[tokio::test]
async fn all_scripts_and_styles_compressed_stay_under_the_budget() {
    let base = spawn().await;
    let client = reqwest::Client::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !(name.ends_with(".js") || name.ends_with(".css")) {
            continue;
        }
        let r = client.get(format!("{base}/{name}")).header("accept-encoding", "gzip").send().await.unwrap();
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(r.headers()["content-encoding"], "gzip", "{name} is served compressed");
        total += r.bytes().await.unwrap().len();
    }
    println!("all JS+CSS, gzip: {total} bytes");
    assert!(total > 0 && total < 150 * 1024, "{total} bytes");
}
