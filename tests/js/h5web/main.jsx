// h5web's own app with its h5wasm provider, as in h5web's standalone viewer (myhdf5): opens
// ?file=URL at ?path=/some/dataset. The HDF5 filter plugins are those h5web's provider is built
// for (h5wasm-plugins 0.2.0), served as static assets.
import "@h5web/app/styles.css";

import { App } from "@h5web/app";
import { H5WasmBufferProvider, Plugin } from "@h5web/h5wasm";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";

const PLUGINS = import.meta.glob("../node_modules/h5wasm-plugins/plugins/*.so", {
  query: "?url",
  import: "default",
  eager: true,
});

async function getPlugin(name) {
  const url = PLUGINS[`../node_modules/h5wasm-plugins/plugins/libH5Z${name}.so`];
  window.h5webPluginsAsked = [...(window.h5webPluginsAsked ?? []), name];
  return url ? (await fetch(url)).arrayBuffer() : undefined;
}

const params = new URLSearchParams(window.location.search);
const file = params.get("file");
const buffer = await (await fetch(file)).arrayBuffer();

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <H5WasmBufferProvider filename={file} buffer={buffer} getPlugin={getPlugin}>
      <App initialPath={params.get("path") ?? "/"} />
    </H5WasmBufferProvider>
  </StrictMode>,
);
