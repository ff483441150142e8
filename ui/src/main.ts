import { isTauri } from '@tauri-apps/api/core';
import { mount } from 'svelte';
import App from './App.svelte';
import './app.css';
import { createMockBackend, tauriBackend } from './lib/backend';

// `npm run dev` opened in a plain browser has no Rust side to call; the mock keeps the
// screen usable for layout work there. Production builds always use the real backend.
// It plays the demo (a door to claim, the sample calendar) with slow calls, so progress shows.
const backend = import.meta.env.DEV && !isTauri() ? createMockBackend({ demo: true, slowMs: 700 }) : tauriBackend;

const target = document.getElementById('app');
if (!target) {
  throw new Error('index.html has no #app element');
}

export default mount(App, { target, props: { backend } });
