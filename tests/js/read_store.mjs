// Read an h5store file with h5wasm (the HDF5 build h5web's VS Code and standalone viewers use)
// and print what it sees as JSON: root attributes, /labels, the columns of /scores, the shape of
// /index_tail, every class group's attributes, the rows of
// /index, each class preview's shape and pixels, and the first image of every image stack as
// decoded by the HDF5 filter plugins h5web's viewers load (h5wasm-plugins), or the error HDF5
// gave. tests/test_h5web.py compares it with h5py and h5store.
//
//     node read_store.mjs FILE
import { readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import h5wasm from "h5wasm/node";

const Module = await h5wasm.ready;
// By default h5wasm prints HDF5's error stack and returns an uninitialised buffer when a read
// fails (a missing filter, say); h5web's provider turns the errors into exceptions, as here.
Module.activate_throwing_error_handler();

// The plugins as h5web's viewers ship them: h5wasm-plugins' builds, put on HDF5's plugin path.
const pluginDir = fileURLToPath(new URL("node_modules/h5wasm-plugins/plugins/", import.meta.url));
const pluginPath = Module.get_plugin_search_paths()[0];
Module.FS.mkdirTree(pluginPath);
for (const name of readdirSync(pluginDir)) {
  Module.FS.writeFile(`${pluginPath}/${name}`, readFileSync(pluginDir + name));
}

function plain(value) {
  if (typeof value === "bigint") return Number(value);
  if (Number.isNaN(value)) return "NaN"; // JSON has no NaN (scores not given are NaN)
  if (ArrayBuffer.isView(value)) return Array.from(value, plain);
  if (Array.isArray(value)) return value.map(plain);
  return value;
}

function attributes(entity) {
  const out = {};
  for (const [name, attr] of Object.entries(entity.attrs)) out[name] = plain(attr.value);
  return out;
}

const file = new h5wasm.File(process.argv[2], "r");
const index = file.get("index");
const classes = file.get("classes");
const previews = {};
const classAttrs = {};
for (const name of classes.keys()) {
  classAttrs[name] = attributes(classes.get(name));
  const preview = file.get(`previews/${name}/data`);
  previews[name] = {
    shape: preview.shape,
    dtype: preview.dtype,
    attrs: attributes(preview),
    pixels: Array.from(preview.value),
  };
}
const stacks = {};
for (const name of classes.keys()) {
  const group = classes.get(name);
  for (const stackName of group.keys()) {
    if (stackName === "preview") continue;
    const stack = group.get(stackName);
    const path = `/classes/${name}/${stackName}`;
    try {
      const first = stack.slice([[0, 1]]);
      stacks[path] = { shape: stack.shape, filters: stack.filters, pixels: Array.from(first, plain) };
    } catch (error) {
      const reason = String(error).match(/required filter.*not registered/i)?.[0];
      stacks[path] = { shape: stack.shape, filters: stack.filters, error: reason ?? String(error) };
    }
  }
}
const scores = file.get("scores");
const result = {
  root: attributes(file),
  labels: file.get("labels").value,
  scoreColumns: scores ? scores.attrs.columns?.value ?? null : null,
  tailShape: file.get("index_tail").shape,
  index: {
    shape: index.shape,
    columns: index.metadata.compound_type.members.map((m) => m.name),
    rows: plain(index.value),
  },
  classes: classAttrs,
  previews,
  stacks,
};
file.close();
process.stdout.write(JSON.stringify(result));
