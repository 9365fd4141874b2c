// Test harness (served by the tests only, never shipped): lets pytest drive the crypto modules through
// Playwright's page.evaluate without eval or inline scripts.
//
// Everything crosses the page boundary as JSON. Bytes go as {"b64": "..."} both ways; an error comes back
// as {"error": <class name>, "message": ...} so the Python side can assert the exact class.
//
//   harness.call("module", "<module>.<function>", args)   a function of sup/web/static/js/crypto/<module>.js
//   harness.call("device", "<name>.<method>", args)        a method of a DeviceCrypto held under <name>
//   harness.call("harness", "<helper>", args)              one of the helpers below

import * as attachments from "/js/crypto/attachments.js";
import * as bundle from "/js/crypto/bundle.js";
import * as bytes from "/js/crypto/bytes.js";
import * as device from "/js/crypto/device.js";
import * as envelope from "/js/crypto/envelope.js";
import * as primitives from "/js/crypto/primitives.js";
import * as ratchet from "/js/crypto/ratchet.js";
import * as safety from "/js/crypto/safety.js";
import * as senderkeys from "/js/crypto/senderkeys.js";
import * as store from "/js/crypto/store.js";
import * as weakkeys from "/js/crypto/weakkeys.js";
import * as wire from "/js/crypto/wire.js";
import * as x3dh from "/js/crypto/x3dh.js";
import { VECTORS } from "/test/vectors.js";

const MODULES = {
  attachments,
  bundle,
  bytes,
  device,
  envelope,
  primitives,
  ratchet,
  safety,
  senderkeys,
  store,
  weakkeys,
  wire,
  x3dh,
};

/** @type {Map<string, device.DeviceCrypto>} */
const devices = new Map();
/** Gates a test opens from Python, to hold a Web Lock while another tab waits. */
const gates = new Map();

function toJs(value) {
  if (Array.isArray(value)) return value.map(toJs);
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "b64") return bytes.fromBase64(value.b64);
    return Object.fromEntries(keys.map((k) => [k, toJs(value[k])]));
  }
  return value;
}

function toPy(value) {
  if (value instanceof Uint8Array) return { b64: bytes.toBase64(value) };
  if (Array.isArray(value)) return value.map(toPy);
  if (value instanceof Map) return [...value].map(toPy);
  if (value !== null && typeof value === "object") {
    if (typeof value.toJSON === "function") return toPy(value.toJSON());
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toPy(v)]));
  }
  return value === undefined ? null : value;
}

function gate(name) {
  if (!gates.has(name)) {
    let open;
    const opened = new Promise((resolve) => (open = resolve));
    gates.set(name, { opened, open, entered: false });
  }
  return gates.get(name);
}

/** A clock the tests move by hand (seconds since the epoch), for devices made with createDeviceWithClock. */
let clock = 1_700_000_000;

const HELPERS = {
  /** DeviceCrypto.create with the test clock instead of Date.now. */
  async createDeviceWithClock(name, userId, deviceId) {
    const d = await device.DeviceCrypto.create(userId, deviceId, { now: () => clock });
    devices.set(name, d);
    return d.identityKey;
  },

  advanceClock(seconds) {
    clock += seconds;
  },

  /** DeviceCrypto.create under a name; returns its identity key. */
  async createDevice(name, userId, deviceId) {
    const d = await device.DeviceCrypto.create(userId ?? undefined, deviceId ?? undefined);
    devices.set(name, d);
    return d.identityKey;
  },

  /** A device from a saved state (toJSON), under a name. */
  async loadDevice(name, state) {
    devices.set(name, await device.DeviceCrypto.fromJSON(state));
  },

  /** A bundle for device `name`, as the key directory would hand it out (one fresh one-time prekey or none). */
  async bundleOf(name, withOneTime = true) {
    const d = devices.get(name);
    const [opk] = withOneTime ? await d.generateOneTimePrekeys(1) : [null];
    const [userId, deviceId] = d.address;
    return bundle.bundleToJson({
      userId,
      deviceId,
      identityKey: d.identityKey,
      signedPrekey: d.signedPrekey(),
      oneTimePrekey: opk,
    });
  },

  /** Recompute one docs/e2e-vectors file's outputs from its inputs. */
  async vector(name, inputs) {
    const compute = VECTORS[name];
    if (compute === undefined) throw new Error(`no JavaScript computation for vector ${name}`);
    return compute(inputs);
  },

  /** Run DeviceCrypto.<method>(...args) on the device stored in IndexedDB `dbName`, under its Web Lock. */
  async stored(dbName, method, args) {
    const s = await store.DeviceStore.open(dbName);
    try {
      return await s.withDevice((d) => d[method](...args));
    } finally {
      s.close();
    }
  },

  /** Create a device in IndexedDB `dbName`; returns its identity key. */
  async storeCreate(dbName, userId, deviceId) {
    const s = await store.DeviceStore.open(dbName);
    try {
      return (await s.create(userId, deviceId)).identityKey;
    } finally {
      s.close();
    }
  },

  /** The stored state of IndexedDB `dbName`, without taking the lock (for assertions). */
  async storedState(dbName) {
    const s = await store.DeviceStore.open(dbName);
    try {
      return (await s.load())?.toJSON() ?? null;
    } finally {
      s.close();
    }
  },

  /**
   * Like `stored`, but after the operation hold the lock until gate `gateName` is opened. Not awaited by the
   * caller's first call: Python starts it, checks the other tab waits, then opens the gate.
   */
  async storedHeld(dbName, method, args, gateName) {
    const g = gate(gateName);
    const s = await store.DeviceStore.open(dbName);
    try {
      return await s.withDevice(async (d) => {
        const result = await d[method](...args);
        g.entered = true;
        await g.opened;
        return result;
      });
    } finally {
      s.close();
    }
  },

  gateEntered(name) {
    return gate(name).entered;
  },

  openGate(name) {
    gate(name).open();
  },

  /** What the Web Locks manager of this origin holds and queues. */
  async locks() {
    const state = await navigator.locks.query();
    return { held: state.held.map((l) => l.name), pending: state.pending.map((l) => l.name) };
  },

  /**
   * The race the lock prevents: load the stored state and run `method` without the lock, holding the
   * result until gate `gateName` opens, then save. Two tabs doing this both start from the same state.
   */
  async unlockedRace(dbName, method, args, gateName) {
    const g = gate(gateName);
    const s = await store.DeviceStore.open(dbName);
    try {
      const d = await s.load();
      const result = await d[method](...args);
      g.entered = true;
      await g.opened;
      await s.save(d);
      return result;
    } finally {
      s.close();
    }
  },
};

async function dispatch(target, path, args) {
  if (target === "harness") return HELPERS[path](...args);
  const [owner, name] = path.split(".");
  if (target === "module") {
    const fn = MODULES[owner]?.[name];
    if (typeof fn !== "function") throw new Error(`no function ${path}`);
    return fn(...args);
  }
  if (target === "device") {
    const d = devices.get(owner);
    if (d === undefined) throw new Error(`no device ${owner}`);
    if (typeof d[name] !== "function") {
      if (name in d) return d[name]; // a getter (identityKey, address)
      throw new Error(`no method ${name}`);
    }
    return d[name](...args);
  }
  throw new Error(`unknown target ${target}`);
}

window.harness = {
  async call(target, path, args) {
    try {
      return { ok: toPy(await dispatch(target, path, toJs(args))) };
    } catch (error) {
      return { error: error?.name ?? "Error", message: String(error?.message ?? error) };
    }
  },
};
document.getElementById("status").textContent = "ready";
