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
    assert!(html.contains(r#"<script src="/app.js" defer>"#));
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
