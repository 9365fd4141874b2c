// The device's crypto state in IndexedDB, and the one rule that keeps it sound across tabs: every
// operation that loads, changes and saves the state runs under an exclusive Web Lock (navigator.locks),
// one per stored device. Two tabs of the app each hold their own DeviceCrypto in memory; if both loaded
// the same state and each encrypted a message, they would use the same ratchet message key, so the same
// AES-GCM key and nonce for two plaintexts, and the peer would reject one as a duplicate. Under the lock a
// tab always starts from what the previous holder saved.
//
// What is stored: DeviceCrypto.toJSON(), private keys included, as raw bytes (base64). WebCrypto can keep a
// key non-extractable, but then it cannot be serialised, and the Double Ratchet must serialise its chain and
// ratchet keys after every message; the identity seed is needed raw as well (it derives both the Ed25519 and
// the X25519 identity key). So the state's protection is the browser's: IndexedDB is private to the origin,
// and the app's strict CSP (script-src 'self') is what keeps other scripts out of that origin. See
// docs/e2e.md "The browser implementation".

import { CryptoError } from "./errors.js";
import { DeviceCrypto } from "./device.js";

const DB_PREFIX = "sup-crypto-";
const DB_VERSION = 1;
const OBJECT_STORE = "state";
const RECORD = "device";

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function transactionDone(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("transaction aborted"));
  });
}

/** One device's crypto state in IndexedDB database `sup-crypto-<name>`. */
export class DeviceStore {
  /** @param {IDBDatabase} db @param {string} name @param {import("./device.js").DeviceOptions} options */
  constructor(db, name, options) {
    this._db = db;
    this._options = options;
    /** The Web Lock every load-modify-save of this device takes. */
    this.lockName = `${DB_PREFIX}${name}`;
  }

  /**
   * Open (creating if needed) the store of one device; `name` tells devices apart (one per account).
   * @param {string} [name] @param {import("./device.js").DeviceOptions} [options] passed to DeviceCrypto
   */
  static async open(name = "default", options = {}) {
    if (!globalThis.navigator?.locks)
      throw new CryptoError("this browser has no Web Locks: refusing to store crypto state");
    const req = indexedDB.open(`${DB_PREFIX}${name}`, DB_VERSION);
    req.onupgradeneeded = () => req.result.createObjectStore(OBJECT_STORE);
    const db = await request(req);
    // Another tab upgrading the schema must not be blocked by this one.
    db.onversionchange = () => db.close();
    return new DeviceStore(db, name, options);
  }

  close() {
    this._db.close();
  }

  /**
   * Run `fn(device)` with the stored device, under the lock, and save the device afterwards. The state is
   * saved even when `fn` throws: DeviceCrypto never leaves a failed operation half done, but an operation
   * that succeeded before the throw (an encryption, say) must not be forgotten, or its message key would be
   * used again. Send what `fn` produced only after this resolves (the state is saved by then).
   * @template T
   * @param {(device: DeviceCrypto) => Promise<T>} fn
   * @returns {Promise<T>}
   */
  withDevice(fn) {
    return navigator.locks.request(this.lockName, { mode: "exclusive" }, async () => {
      const device = await this.load();
      if (device === null) throw new CryptoError("no device state stored: create() it first");
      try {
        return await fn(device);
      } finally {
        await this.save(device);
      }
    });
  }

  /**
   * Create and store a new device (under the lock); refuses to replace one that exists.
   * @param {string} userId @param {string} deviceId @returns {Promise<DeviceCrypto>}
   */
  create(userId, deviceId) {
    return navigator.locks.request(this.lockName, { mode: "exclusive" }, async () => {
      if ((await this._get()) !== undefined) throw new CryptoError("a device state is stored already");
      const device = await DeviceCrypto.create(userId, deviceId, this._options);
      await this.save(device);
      return device;
    });
  }

  /**
   * Remove the stored state (logging out); under the lock, so no tab saves it back afterwards.
   */
  destroy() {
    return navigator.locks.request(this.lockName, { mode: "exclusive" }, async () => {
      const tx = this._db.transaction(OBJECT_STORE, "readwrite");
      tx.objectStore(OBJECT_STORE).delete(RECORD);
      await transactionDone(tx);
    });
  }

  async _get() {
    const tx = this._db.transaction(OBJECT_STORE, "readonly");
    return request(tx.objectStore(OBJECT_STORE).get(RECORD));
  }

  /**
   * The stored device, or null. Outside withDevice this is a read-only snapshot: changing and saving it
   * without the lock can race another tab.
   * @returns {Promise<DeviceCrypto | null>}
   */
  async load() {
    const state = await this._get();
    return state === undefined ? null : DeviceCrypto.fromJSON(state, this._options);
  }

  /** Write the device's state (a structured clone of toJSON()). Use withDevice rather than calling this. */
  async save(device) {
    const tx = this._db.transaction(OBJECT_STORE, "readwrite");
    tx.objectStore(OBJECT_STORE).put(device.toJSON(), RECORD);
    await transactionDone(tx);
  }
}
