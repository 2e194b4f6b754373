import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// Two pages: the member portal at / and the admin console at /admin/. Hash routing inside
// each, so the worker's static assets need no SPA fallback and every API path stays the
// worker's. No inline scripts or styles: the CSP in public/_headers forbids them.
export default defineConfig({
  base: "/",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    rollupOptions: {
      input: {
        member: fileURLToPath(new URL("index.html", import.meta.url)),
        admin: fileURLToPath(new URL("admin/index.html", import.meta.url)),
      },
    },
  },
});
