// The server's administration (docs/api.md "Administration"), for users with is_admin. To anyone else every
// admin path is a 404, as a path the server does not have: that is also how this client learns whether I am
// an administrator (`amAdmin`), with one small request.

const enc = encodeURIComponent;
const A = "/admin";

/** Whether I am an administrator of this server. */
export async function amAdmin(app) {
  try {
    await app.api.get(`${A}/users`, { query: { limit: 1 } });
    return true;
  } catch (error) {
    if (error.status === 404) return false;
    throw error;
  }
}

/** @param {{q?: string, status?: string, after?: string, limit?: number}} query */
export const users = (app, query = {}) => app.api.get(`${A}/users`, { query: { limit: 50, ...query } });
export const user = (app, id) => app.api.get(`${A}/users/${enc(id)}`);
export const deactivate = (app, id) => app.api.post(`${A}/users/${enc(id)}/deactivate`);
export const reactivate = (app, id) => app.api.post(`${A}/users/${enc(id)}/reactivate`);
export const removeUser = (app, id) => app.api.del(`${A}/users/${enc(id)}`);
export const resetTwoFactor = (app, id) => app.api.post(`${A}/users/${enc(id)}/2fa/reset`);
export const setAdmin = (app, id, isAdmin) => app.api.put(`${A}/users/${enc(id)}/admin`, { is_admin: isAdmin });
export const revokeDevices = (app, id) => app.api.del(`${A}/users/${enc(id)}/devices`);
export const revokeDevice = (app, id, deviceId) => app.api.del(`${A}/users/${enc(id)}/devices/${enc(deviceId)}`);

export const invites = (app, before) => app.api.get(`${A}/invites`, { query: { limit: 100, before } });
/** @param {{max_uses?: number, expires_in_seconds?: number | null}} fields */
export const createInvite = (app, fields) => app.api.post(`${A}/invites`, fields);
export const revokeInvite = (app, id) => app.api.del(`${A}/invites/${enc(id)}`);

export const stats = (app) => app.api.get(`${A}/stats`);
/** @param {{before?: string, action?: string, target_id?: string, actor_id?: string}} query */
export const audit = (app, query = {}) => app.api.get(`${A}/audit`, { query: { limit: 50, ...query } });
