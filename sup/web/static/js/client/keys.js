// This device's end-to-end keys as the messenger uses them (the browser twin of the key half of
// sup/client/client.py): the DeviceCrypto held in memory by the leading tab, publishing and topping up
// prekeys, the device lists of users, the devices met (trust on first use of a device list, new-device
// notices), pairwise encryption to one device, and safety numbers. docs/e2e.md "How keys are verified".
//
// Only the tab that holds the device's Web Lock (crypto/store.js `lockName`; state/tabs.js takes it for as
// long as the tab leads) creates a Keys: every change is saved with `save()` under that lock.

import { fromBase64, toBase64 } from "../crypto/bytes.js";
import { BadBundle, DeviceCrypto, UntrustedIdentity } from "../crypto/device.js";
import { safetyNumber } from "../crypto/safety.js";
import { ApiError } from "../api/http.js";
import { Batch } from "../store/db.js";

export const ONE_TIME_PREKEYS = 100;
const SIGNED_PREKEY_MAX_AGE_MS = 7 * 86400 * 1000; // weekly, as Signal and the Python SDK

/** A recipient device published keys that cannot be used; nothing was sent. */
export class BadDeviceKeys extends Error {
  constructor(userId, deviceId, reason) {
    super(`a device of this contact published unusable keys (${reason}); nothing was sent`);
    this.name = "BadDeviceKeys";
    this.userId = userId;
    this.deviceId = deviceId;
  }
}

/** A listed device has no keys any more (logged out meanwhile): refetch the lists and try again. */
export class DeviceGone extends Error {
  constructor(deviceId) {
    super(`device ${deviceId} is gone`);
    this.name = "DeviceGone";
    this.code = "device_gone";
  }
}

/** Members of a chat (`userIds`) have no device with published keys: nothing can be encrypted to them yet. */
export class MemberWithoutDevice extends Error {
  constructor(userIds) {
    super("some members have no device that can read encrypted messages yet");
    this.name = "MemberWithoutDevice";
    this.code = "member_without_device"; // as the server says it (409), with the same members
    this.userIds = userIds;
  }
}

export class Keys {
  /**
   * @param {{api: import("../api/http.js").Api, local: import("../store/db.js").LocalStore,
   *   keystore: import("../crypto/store.js").DeviceStore, userId: string, deviceId: string,
   *   onNotices: () => void}} deps
   */
  constructor({ api, local, keystore, userId, deviceId, onNotices }) {
    this.api = api;
    this.local = local;
    this.keystore = keystore;
    this.userId = userId;
    this.deviceId = deviceId;
    this.onNotices = onNotices;
    /** @type {DeviceCrypto | null} */
    this.device = null;
    /** user id -> device id -> identity key, as the directory lists them now (a cache) */
    this.listed = new Map();
    /** "user id/device id" -> the name its owner gave it, as the directory says (for new-device notices) */
    this.names = new Map();
    /** user id -> device id -> identity key (base64): the devices met (the store's `devices`, cached) */
    this.known = new Map();
  }

  /** Load the stored state, or make a new one (the caller holds the device's lock). */
  async load() {
    this.device = await this.keystore.load();
    if (this.device === null) {
      this.device = await DeviceCrypto.create(this.userId, this.deviceId);
      await this.save();
    }
    this.device.setAddress(this.userId, this.deviceId);
    return this.device;
  }

  save() {
    return this.keystore.save(this.device);
  }

  get identityKey() {
    return this.device.identityKey;
  }

  // ---- publishing --------------------------------------------------------------------------------

  /** Publish this device's keys once; the private keys are saved before the public ones leave. */
  async publishIfNeeded() {
    if (await this.local.get("keys_published")) return false;
    // The whole list answers 200 either way (a missing device's keys would be a 404 in the console).
    const published = (await this.api.userKeys(this.userId)).find((d) => d.device_id === this.deviceId) ?? null;
    if (published === null || published.identity_key !== toBase64(this.identityKey)) {
      const prekeys = await this.device.generateOneTimePrekeys(ONE_TIME_PREKEYS);
      await this.save();
      await this.api.publishKeys(this.device.publishKeysBody(prekeys));
    }
    await this.local.set("keys_published", true);
    await this.meetOwnDevices();
    return true;
  }

  /** First contact with my own account: its devices now are known; any later one is announced. */
  async meetOwnDevices() {
    let listed = [];
    try {
      listed = await this.api.userKeys(this.userId);
    } catch (error) {
      console.warn("could not list my own devices", error);
    }
    const batch = new Batch();
    const mine = new Map([[this.deviceId, toBase64(this.identityKey)]]);
    for (const d of listed) mine.set(d.device_id, d.identity_key);
    for (const [deviceId, key] of mine) batch.devices.push(this._deviceRow(this.userId, deviceId, key));
    await this.local.apply(batch);
    this.known.delete(this.userId);
  }

  /** Upload more one-time prekeys (on prekeys.low). */
  async topUp(count = ONE_TIME_PREKEYS) {
    const prekeys = await this.device.generateOneTimePrekeys(count);
    await this.save(); // before the upload: a prekey handed out must be one we can use
    return this.api.uploadPrekeys(this.device.uploadPrekeysBody(prekeys));
  }

  /** Rotate the signed prekey when it is a week old. */
  async rotateIfOld() {
    const status = await this.api.prekeyStatus();
    const created = status.signed_prekey_created_at;
    if (created !== null && created !== undefined && Date.now() - created < SIGNED_PREKEY_MAX_AGE_MS) return false;
    await this.device.rotateSignedPrekey();
    await this.save();
    await this.api.uploadPrekeys(this.device.uploadPrekeysBody([], { withSignedPrekey: true }));
    return true;
  }

  // ---- device lists and the devices met ----------------------------------------------------------

  /** device id -> identity key of every active device of a user, from the directory (cached). */
  async userDevices(userId) {
    let devices = this.listed.get(userId);
    if (devices === undefined) {
      const records = await this.api.userKeys(userId);
      devices = new Map(records.map((d) => [d.device_id, fromBase64(d.identity_key)]));
      for (const d of records) this.names.set(`${userId}/${d.device_id}`, String(d.device_name ?? ""));
      this.listed.set(userId, devices);
    }
    return devices;
  }

  forgetListed(userIds = null) {
    if (userIds === null) this.listed.clear();
    else for (const u of userIds) this.listed.delete(u);
  }

  async knownDevices(userId) {
    let known = this.known.get(userId);
    if (known === undefined) {
      const loaded = await this.local.knownDevices(userId);
      known = this.known.get(userId) ?? loaded; // a concurrent caller may have loaded it first
      this.known.set(userId, known);
    }
    return known;
  }

  _deviceRow(userId, deviceId, key) {
    return { user_id: userId, device_id: deviceId, identity_key: key, first_seen: Date.now() };
  }

  /**
   * Record devices of a user not met before. The first contact trusts the list as it is (as the first
   * identity key of a device is trusted); after it, each new device is a notice, shown before anything is
   * encrypted to it. With `batch` the records join it; else they are stored now.
   * @param {string} userId @param {Map<string, Uint8Array>} devices @param {Batch | null} [batch]
   */
  async meetDevices(userId, devices, batch = null) {
    const known = await this.knownDevices(userId);
    const firstContact = known.size === 0;
    const fresh = [...devices].filter(([d]) => !known.has(d) && d !== this.deviceId);
    if (!fresh.length) return [];
    for (const [d, key] of fresh) known.set(d, toBase64(key)); // no await since the check: one notice each
    const notices = firstContact
      ? []
      : fresh.map(([d, key]) => ({
          type: "new_device",
          user_id: userId,
          device_id: d,
          identity_key: toBase64(key),
          // The server's word, to recognise the device by, not to trust it ("" when met only as a sender).
          device_name: this.names.get(`${userId}/${d}`) ?? "",
          at: Date.now(),
          dismissed: false,
        }));
    const target = batch ?? new Batch();
    for (const [d, key] of fresh) target.devices.push(this._deviceRow(userId, d, toBase64(key)));
    target.notices.push(...notices);
    if (batch === null) {
      await this.local.apply(target);
      if (notices.length) this.onNotices();
    }
    return notices;
  }

  /**
   * After keys.changed `added` for a user already met: show the new device now, not at the next send. The
   * server says `added` again when the device publishes its keys, which is when it is first listed.
   */
  async checkNewDevices(userId) {
    if (!(await this.knownDevices(userId)).size) return;
    this.listed.delete(userId);
    await this.meetDevices(userId, await this.userDevices(userId));
  }

  /** Record a changed identity key as trusted (Signal's default), and say so. */
  async identityChanged(userId, deviceId, identityKey, batch = null) {
    await this.device.forgetSession(userId, deviceId);
    await this.device.acceptIdentity(userId, deviceId, identityKey);
    (await this.knownDevices(userId)).set(deviceId, toBase64(identityKey));
    const target = batch ?? new Batch();
    target.devices.push(this._deviceRow(userId, deviceId, toBase64(identityKey)));
    target.notices.push({
      type: "identity_changed",
      user_id: userId,
      device_id: deviceId,
      identity_key: toBase64(identityKey),
      at: Date.now(),
      dismissed: false,
    });
    if (batch === null) {
      await this.save();
      await this.local.apply(target);
      this.onNotices();
    }
  }

  // ---- encryption to one device --------------------------------------------------------------------

  /** Pairwise-encrypt for one device, starting a session from a prekey bundle when there is none. */
  async encryptTo(userId, deviceId, identityKey, plaintext) {
    const recorded = this.device.peerIdentity(userId, deviceId);
    if (recorded !== null && toBase64(recorded) !== toBase64(identityKey)) {
      await this.identityChanged(userId, deviceId, identityKey); // the directory lists a new identity
    }
    let bundle = null;
    if (!this.device.hasSession(userId, deviceId)) {
      try {
        bundle = await this.api.prekeyBundle(userId, deviceId);
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) throw new DeviceGone(deviceId);
        throw error;
      }
    }
    try {
      try {
        return await this.device.encrypt(userId, deviceId, plaintext, bundle);
      } catch (error) {
        if (!(error instanceof UntrustedIdentity)) throw error;
        await this.identityChanged(userId, deviceId, error.identityKey);
        return await this.device.encrypt(userId, deviceId, plaintext, bundle);
      }
    } catch (error) {
      // Skipping the device is no way out: the server refuses a send that does not name it.
      if (error instanceof BadBundle) throw new BadDeviceKeys(userId, deviceId, error.message);
      throw error;
    }
  }

  // ---- safety numbers ----------------------------------------------------------------------------

  /** The identity keys that count for a user: every device met here and every device listed now. */
  async identityKeys(userId) {
    this.listed.delete(userId);
    await this.meetDevices(userId, await this.userDevices(userId));
    const keys = [];
    for (const [deviceId, key] of await this.knownDevices(userId)) {
      if (deviceId === this.deviceId) continue;
      const recorded = this.device.peerIdentity(userId, deviceId);
      keys.push(recorded ?? fromBase64(key));
    }
    return keys;
  }

  /**
   * The 60-digit safety number with a user, and the devices it covers on their side.
   * @returns {Promise<{number: string, devices: {deviceId: string, identityKey: string}[]}>}
   */
  async safetyNumber(userId) {
    if (userId === this.userId) throw new Error("a safety number is compared with someone else");
    const mine = [...(await this.identityKeys(this.userId)), this.identityKey];
    const theirs = await this.identityKeys(userId);
    if (!theirs.length) throw new Error("that user has no device with published keys");
    const number = await safetyNumber(this.userId, mine, userId, theirs);
    const devices = [...(await this.knownDevices(userId))].map(([deviceId, identityKey]) => ({
      deviceId,
      identityKey,
    }));
    return { number, devices };
  }
}
