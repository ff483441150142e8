/// <reference types="vitest/config" />
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { defineConfig } from 'vite';

export default defineConfig({
  plugins: [svelte()],
  // Keep the Rust compiler's output visible while `tauri dev` runs both.
  clearScreen: false,
  server: {
    // tauri.conf.json points devUrl here; another port would leave the window blank.
    port: 5173,
    strictPort: true,
  },
  build: {
    // WebKitGTK, WebView2 and WKWebView all run ES2021.
    target: 'es2021',
    // Source maps in the bundle would only ship our sources inside the binary.
    sourcemap: false,
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
