// The docs/e2e-vectors computations in JavaScript, one per file, mirroring sup/client/crypto/_vectors.py:
// fixed private keys and randomness in (a scripted random source replaces the CSPRNG, in the order Python
// draws it), every output re-derived. Where Python re-derives a value "from first principles", so does
// this file, with the primitives directly, and it fails when the modules disagree with the formulas.

import { concat, equal, fromHex, lp, toHex, utf8 } from "/js/crypto/bytes.js";
import { DeviceCrypto } from "/js/crypto/device.js";
import { encryptAttachment } from "/js/crypto/attachments.js";
import * as p from "/js/crypto/primitives.js";
import { fingerprint, safetyNumber } from "/js/crypto/safety.js";
import { chainStep, groupKeyMaterial, OwnSenderKey } from "/js/crypto/senderkeys.js";
import { groupContext, groupHeader, ratchetHeader, sessionAdAppendix } from "/js/crypto/wire.js";
import { x3dhInitiate, x3dhRespond } from "/js/crypto/x3dh.js";

/**
 * Hands out pre-set byte strings in order, in place of the random number generator. Once `done()` checked
 * that all were used, it hands out real randomness (as Python's scripted block ends).
 */
function script(values) {
  const queue = values.map((v) => (typeof v === "string" ? fromHex(v) : v));
  let finished = false;
  const source = (n) => {
    if (finished) return p.randomBytes(n);
    const value = queue.shift();
    if (value === undefined || value.length !== n) {
      throw new Error(`randomness script out of order: wanted ${n} bytes, next is ${value?.length}`);
    }
    return value;
  };
  source.done = () => {
    if (queue.length) throw new Error("randomness script not fully consumed");
    finished = true;
  };
  return source;
}

function check(condition, what) {
  if (!condition) throw new Error(`vector self-check failed: ${what}`);
}

function addresses(i) {
  return concat(lp(i.alice_user_id), lp(i.alice_device_id), lp(i.bob_user_id), lp(i.bob_device_id));
}

async function signedPrekey(i) {
  const seed = fromHex(i.identity_seed);
  const random = script([seed, i.signed_prekey_private]);
  const device = await DeviceCrypto.create(undefined, undefined, { random });
  random.done();
  const published = device.signedPrekey();
  const xPrivate = await p.x25519PrivateOfSeed(seed);
  const xPublic = await p.x25519Public(xPrivate);
  // The identity's X25519 public key is also the Edwards-to-Montgomery map of its Ed25519 key.
  check(equal(xPublic, p.ed25519PublicToX25519(device.identityKey)), "Edwards-to-Montgomery map");
  const message = concat(new Uint8Array([0x05]), published.publicKey);
  check(await p.ed25519Verify(device.identityKey, published.signature, message), "signature verifies");
  return {
    identity_key: toHex(device.identityKey),
    identity_key_x25519_private: toHex(xPrivate),
    identity_key_x25519_public: toHex(xPublic),
    signed_prekey_id: published.keyId,
    signed_prekey_public: toHex(published.publicKey),
    signed_message: toHex(message),
    signature: toHex(published.signature),
  };
}

async function x3dhOutputs(i, withOneTime) {
  const aSeed = fromHex(i.alice_identity_seed);
  const bSeed = fromHex(i.bob_identity_seed);
  const spk = fromHex(i.bob_signed_prekey_private);
  const opk = withOneTime ? fromHex(i.bob_one_time_prekey_private) : null;
  const ek = fromHex(i.alice_ephemeral_private);
  const appendix = sessionAdAppendix([i.alice_user_id, i.alice_device_id], [i.bob_user_id, i.bob_device_id]);
  check(equal(appendix, addresses(i)), "address appendix");
  const aKey = await p.ed25519Public(aSeed);
  const bKey = await p.ed25519Public(bSeed);
  const alice = await x3dhInitiate({
    identitySeed: aSeed,
    identityKey: aKey,
    peerIdentityKey: bKey,
    signedPrekey: await p.x25519Public(spk),
    oneTimePrekey: opk === null ? null : await p.x25519Public(opk),
    ephemeralPrivate: ek,
    adAppendix: appendix,
  });
  const bob = await x3dhRespond({
    identitySeed: bSeed,
    identityKey: bKey,
    peerIdentityKey: aKey,
    baseKey: alice.baseKey,
    signedPrekeyPrivate: spk,
    oneTimePrekeyPrivate: opk,
    adAppendix: appendix,
  });
  check(
    equal(alice.sharedSecret, bob.sharedSecret) && equal(alice.associatedData, bob.associatedData),
    "both sides agree",
  );
  // From first principles: the spec's formulas with the primitives only.
  const aX = await p.x25519PrivateOfSeed(aSeed);
  const bX = await p.x25519PrivateOfSeed(bSeed);
  const dh = [
    await p.x25519(aX, await p.x25519Public(spk)),
    await p.x25519(ek, await p.x25519Public(bX)),
    await p.x25519(ek, await p.x25519Public(spk)),
  ];
  if (opk !== null) dh.push(await p.x25519(ek, await p.x25519Public(opk)));
  const sk = await p.hkdfSha256(concat(new Uint8Array(32).fill(0xff), ...dh), utf8("SUP v1 X3DH"), 32);
  check(equal(sk, alice.sharedSecret), "SK from the formula");
  check(
    dh.every((d, n) => equal(d, alice.dh[n])),
    "DH outputs from the formula",
  );
  const ad = concat(new Uint8Array([0xed]), aKey, new Uint8Array([0xed]), bKey, addresses(i));
  check(equal(ad, alice.associatedData), "AD from the formula");
  return { alice, aKey, bKey, dh };
}

async function x3dh(i) {
  const withOne = await x3dhOutputs(i, true);
  const without = await x3dhOutputs(i, false);
  return {
    alice_identity_key: toHex(withOne.aKey),
    bob_identity_key: toHex(withOne.bKey),
    base_key: toHex(withOne.alice.baseKey),
    ...Object.fromEntries(withOne.dh.map((d, n) => [`dh${n + 1}`, toHex(d)])),
    address_appendix: toHex(addresses(i)),
    associated_data: toHex(withOne.alice.associatedData),
    shared_secret: toHex(withOne.alice.sharedSecret),
    shared_secret_without_one_time_prekey: toHex(without.alice.sharedSecret),
  };
}

async function firstMessage(i) {
  const plaintext = fromHex(i.plaintext);
  const bobRandom = script([i.bob_identity_seed, i.bob_signed_prekey_private, i.bob_one_time_prekey_private]);
  const bob = await DeviceCrypto.create(i.bob_user_id, i.bob_device_id, { random: bobRandom });
  const [oneTime] = await bob.generateOneTimePrekeys(1);
  bobRandom.done();
  const aliceUnusedSpk = await p.sha256(utf8("alice's own signed prekey, unused here"));
  const aliceRandom = script([
    i.alice_identity_seed,
    aliceUnusedSpk,
    i.alice_ephemeral_private,
    i.alice_ratchet_private,
  ]);
  const alice = await DeviceCrypto.create(i.alice_user_id, i.alice_device_id, { random: aliceRandom });
  const bundle = {
    userId: i.bob_user_id,
    deviceId: i.bob_device_id,
    identityKey: bob.identityKey,
    signedPrekey: bob.signedPrekey(),
    oneTimePrekey: oneTime,
  };
  const envelope = await alice.encrypt(i.bob_user_id, i.bob_device_id, plaintext, bundle);
  aliceRandom.done();

  // The same bytes from first principles.
  const { alice: agreed } = await x3dhOutputs(i, true);
  const ratchet = fromHex(i.alice_ratchet_private);
  const ratchetPublic = await p.x25519Public(ratchet);
  const dh = await p.x25519(ratchet, await p.x25519Public(fromHex(i.bob_signed_prekey_private)));
  const okm = await p.hkdfSha256(dh, utf8("SUP v1 root chain"), 64, agreed.sharedSecret);
  const rootKey = okm.slice(0, 32);
  const chainKey = okm.slice(32);
  const messageKey = await p.hmacSha256(chainKey, new Uint8Array([1]));
  const material = await p.hkdfSha256(messageKey, utf8("SUP v1 message key"), 44);
  const aesKey = material.slice(0, 32);
  const nonce = material.slice(32);
  const aad = concat(agreed.associatedData, ratchetHeader(ratchetPublic, 0, 0));
  const ciphertext = await p.aesGcmEncrypt(aesKey, nonce, plaintext, aad);
  const expected = concat(
    new Uint8Array([2, 1]),
    alice.identityKey,
    agreed.baseKey,
    new Uint8Array([0, 0, 0, 1, 1, 0, 0, 0, 1]),
    ratchetPublic,
    new Uint8Array(8),
    ciphertext,
  );
  check(equal(envelope, expected), "DeviceCrypto's first message equals the spec derivation");
  check(equal(await bob.decrypt(i.alice_user_id, i.alice_device_id, envelope), plaintext), "Bob decrypts the vector");
  return {
    signed_prekey_id: bundle.signedPrekey.keyId,
    one_time_prekey_id: oneTime.keyId,
    ratchet_public: toHex(ratchetPublic),
    root_key: toHex(rootKey),
    sending_chain_key: toHex(chainKey),
    next_sending_chain_key: toHex(await p.hmacSha256(chainKey, new Uint8Array([2]))),
    message_key: toHex(messageKey),
    aes_key: toHex(aesKey),
    nonce: toHex(nonce),
    aead_associated_data: toHex(aad),
    envelope: toHex(envelope),
  };
}

async function senderKey(i) {
  const context = concat(lp(i.chat_id), lp(i.sender_user_id), lp(i.sender_device_id));
  check(equal(context, groupContext(i.chat_id, i.sender_user_id, i.sender_device_id)), "group context");
  const random = script([i.distribution_id_random, i.chain_key, i.signing_seed]);
  const own = await OwnSenderKey.generate(random);
  random.done();
  const out = {
    distribution_id: own.distributionId,
    signing_key: toHex(own.signingKey),
    distribution_message: toHex(own.distribution()),
    context: toHex(context),
    messages: [],
  };
  let chainKey = own.chainKey;
  for (const [n, text] of i.plaintexts.entries()) {
    const step = await chainStep(chainKey);
    check(equal(step.seed, await p.hmacSha256(chainKey, new Uint8Array([1]))), "seed from the formula");
    const { key, nonce } = await groupKeyMaterial(step.seed);
    const header = groupHeader(own.distributionId, n);
    const message = await own.encrypt(fromHex(text), context);
    const ciphertext = await p.aesGcmEncrypt(key, nonce, fromHex(text), concat(context, header));
    check(equal(message.slice(0, -64), concat(header, ciphertext)), "group message from the formula");
    check(
      await p.ed25519Verify(own.signingKey, message.slice(-64), concat(context, header, ciphertext)),
      "signature covers context",
    );
    out.messages.push({
      iteration: n,
      chain_key: toHex(chainKey),
      message_key_seed: toHex(step.seed),
      aes_key: toHex(key),
      nonce: toHex(nonce),
      associated_data: toHex(concat(context, header)),
      group_message: toHex(message),
    });
    chainKey = step.chainKey;
  }
  return out;
}

async function attachment(i) {
  const { blob, key } = await encryptAttachment(fromHex(i.plaintext), { key: fromHex(i.key), nonce: fromHex(i.nonce) });
  return { blob: toHex(blob), digest: toHex(key.digest), size: key.size };
}

async function safety(i) {
  const a = i.alice_identity_keys.map(fromHex);
  const b = i.bob_identity_keys.map(fromHex);
  return {
    alice_fingerprint: await fingerprint(i.alice_user_id, a),
    bob_fingerprint: await fingerprint(i.bob_user_id, b),
    safety_number: await safetyNumber(i.alice_user_id, a, i.bob_user_id, b),
  };
}

export const VECTORS = {
  signed_prekey: signedPrekey,
  x3dh,
  first_message: firstMessage,
  sender_key: senderKey,
  attachment,
  safety_number: safety,
};
