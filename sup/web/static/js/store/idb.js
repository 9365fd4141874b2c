// IndexedDB's callbacks as promises, for the device's databases (store/db.js, store/search.js). The crypto
// state's store (crypto/store.js) keeps its own copy, so that crypto/ imports nothing from outside it.

/** The result of an IDBRequest. */
export function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** Settles when a transaction commits; rejects when it fails or is aborted. */
export function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("transaction aborted"));
  });
}

/**
 * Open a database, made or brought to `version` by `upgrade(db)`. It closes itself when another tab asks
 * for a newer version or deletes it (logging out), so that tab is not blocked by this one.
 */
export async function openDatabase(name, version, upgrade) {
  const req = indexedDB.open(name, version);
  req.onupgradeneeded = () => upgrade(req.result);
  const db = await request(req);
  db.onversionchange = () => db.close();
  return db;
}
