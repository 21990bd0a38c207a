// Shows whether the API behind the proxy is up and can reach its database.
"use strict";

async function refreshStatus() {
  const api = document.getElementById("api-status");
  const db = document.getElementById("db-status");
  try {
    const response = await fetch("/health", { cache: "no-store" });
    const body = await response.json();
    api.textContent = response.ok ? "healthy" : `unhealthy (HTTP ${response.status})`;
    db.textContent = body.database || "unknown";
  } catch (error) {
    api.textContent = "unreachable";
    db.textContent = "unknown";
  }
}

refreshStatus();
setInterval(refreshStatus, 5000);
