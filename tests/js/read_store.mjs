// Read an h5store file with h5wasm (the HDF5 build h5web's VS Code and standalone viewers use)
// and print what it sees as JSON: root attributes, every class group's attributes, the rows of
// /index, and each class preview's shape and pixels. tests/test_h5web.py compares it with h5py.
//
//     node read_store.mjs FILE
import h5wasm from "h5wasm/node";

await h5wasm.ready;

function plain(value) {
  if (typeof value === "bigint") return Number(value);
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
const result = {
  root: attributes(file),
  index: {
    shape: index.shape,
    columns: index.metadata.compound_type.members.map((m) => m.name),
    rows: plain(index.value),
  },
  classes: classAttrs,
  previews,
};
file.close();
process.stdout.write(JSON.stringify(result));
