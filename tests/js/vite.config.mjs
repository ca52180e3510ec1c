import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The h5web test page: built to static files (relative paths) that tests/test_h5web.py serves.
export default defineConfig({
  root: "h5web",
  base: "./",
  plugins: [react()],
  build: { outDir: "../dist", emptyOutDir: true, target: "es2022", chunkSizeWarningLimit: 8000 },
  worker: { format: "es" },
});
