// Starts the app (a file of its own, so the page runs under a CSP without inline scripts).
import init from "./hellopears.js";
init({ module_or_path: "./hellopears_bg.wasm" });
// The app shell is cached so the tab opens (and edits) with no peer reachable.
if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("sw.js").catch((error) => console.warn("no offline cache:", error));
}
