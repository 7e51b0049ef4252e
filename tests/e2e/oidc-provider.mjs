// The certified OpenID Provider for Node.js (oidc-provider), configured for portcullis's
// interoperability and browser suites. Loopback only, in-memory storage, development login pages.
//
// Usage: node oidc-provider.mjs '<json>' where the JSON object holds
//   port                    listen port on 127.0.0.1 (0: any free port)
//   redirectUris            the gateway's callback URL(s), registered for every client
//   postLogoutRedirectUris  where RP-initiated logout may send the browser back to
//   secret                  the secret of the two confidential secret clients
//   privateKeyPath          where to write the PEM private key of the private_key_jwt client
//   keyId                   its kid
//
// Stdout carries one JSON object per line: first {"ready":{"issuer":...}} once the server listens,
// then the provider's own events the tests observe ({"event":"grant.success",...}). Errors go to stderr.
//
// API access (for the gateway's bearer tests): opaque access tokens can be introspected (RFC 7662)
// by any confidential client; an authorization request naming the resource `urn:portcullis:api`
// (RFC 8707) gets a JWT access token for that audience instead.
//
// Clients (all with PKCE required):
//   portcullis-basic   client_secret_basic  no refresh token
//   portcullis-post    client_secret_post   refresh token issued
//   portcullis-jwt     private_key_jwt      refresh token issued
//   portcullis-public  none (public)        no refresh token

import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

const API_RESOURCE = 'urn:portcullis:api';

const options = JSON.parse(process.argv[2] ?? '{}');
const out = (object) => process.stdout.write(`${JSON.stringify(object)}\n`);

// Accounts: any login name is accepted by the development interactions; the claims are derived
// from it so the tests know what identity headers to expect.
const GROUPS = { alice: ['admins', 'staff'], bob: ['staff'] };
async function findAccount(_ctx, id) {
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        email: `${id}@example.com`,
        email_verified: true,
        name: id,
        preferred_username: id,
        groups: GROUPS[id] ?? [],
      };
    },
  };
}

// The private_key_jwt client's key pair: the public JWK is registered, the private key is
// written for the gateway.
const client = generateKeyPairSync('ec', { namedCurve: 'P-256' });
writeFileSync(
  options.privateKeyPath,
  client.privateKey.export({ format: 'pem', type: 'pkcs8' }),
  { mode: 0o600 },
);
const clientJwk = { ...client.publicKey.export({ format: 'jwk' }), kid: options.keyId, use: 'sig', alg: 'ES256' };
// Progress on stderr, so that a start that hangs shows how far it got.
const progress = (step) => process.stderr.write(`oidc-provider.mjs: ${step}\n`);
progress('client key written');

// The provider's own signing key, fresh per run (instead of the library's built-in development key).
const signing = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = { ...signing.privateKey.export({ format: 'jwk' }), kid: 'op-rs256', use: 'sig', alg: 'RS256' };
progress('signing key generated');

// Web clients with http:// loopback redirect URIs need no relaxation: oidc-provider 9 refuses
// http and localhost redirect URIs only for clients using the implicit flow.
const common = {
  redirect_uris: options.redirectUris,
  post_logout_redirect_uris: options.postLogoutRedirectUris,
  response_types: ['code'],
};
const clients = [
  { ...common, client_id: 'portcullis-basic', client_secret: options.secret,
    token_endpoint_auth_method: 'client_secret_basic', grant_types: ['authorization_code'] },
  { ...common, client_id: 'portcullis-post', client_secret: options.secret,
    token_endpoint_auth_method: 'client_secret_post', grant_types: ['authorization_code', 'refresh_token'] },
  { ...common, client_id: 'portcullis-jwt', token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256', jwks: { keys: [clientJwk] },
    grant_types: ['authorization_code', 'refresh_token'] },
  { ...common, client_id: 'portcullis-public', token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code'] },
];

// Listen first: the issuer must name the port the system chose.
const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(options.port ?? 0, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;
progress(`listening at ${issuer}`);

const provider = new Provider(issuer, {
  clients,
  findAccount,
  jwks: { keys: [signingJwk] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username', 'groups'],
  },
  // The gateway reads the identity from the id_token. OpenID Connect Core 5.4 lets a provider
  // return scope-requested claims from the userinfo endpoint only when an access token is issued,
  // which is oidc-provider's default; turned off here so the id_token carries them, as most
  // hosted providers do.
  conformIdTokenClaims: false,
  // RFC 7636 for every client, confidential ones included.
  pkce: { required: () => true },
  // Refresh tokens per client: for the clients registered with the refresh_token grant. (The
  // `offline_access` scope is not used for this: oidc-provider drops it unless the authorization
  // request says prompt=consent, and the gateway does not send prompt.)
  issueRefreshToken: async (_ctx, c) => c.grantTypeAllowed('refresh_token'),
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    introspection: {
      enabled: true,
      // Confidential clients may introspect any token; a public client only its own.
      allowedPolicy: async (ctx, client, token) => client.clientAuthMethod !== 'none'
        || token.clientId === ctx.oidc.client.clientId,
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (indicator !== API_RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: 'api:read',
          audience: API_RESOURCE,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  cookies: { keys: ['portcullis-interop-cookie-key'] },
});

provider.on('grant.success', (ctx) => {
  const body = ctx.body ?? {};
  out({
    event: 'grant.success',
    client_id: ctx.oidc.client?.clientId,
    grant_type: ctx.oidc.params?.grant_type,
    scope: body.scope,
    refresh_token: typeof body.refresh_token === 'string',
    id_token: typeof body.id_token === 'string',
  });
});
provider.on('end_session.success', (ctx) => {
  out({ event: 'end_session.success', client_id: ctx.oidc.client?.clientId });
});
for (const name of ['grant.error', 'authorization.error', 'end_session.error', 'server_error']) {
  provider.on(name, (ctx, err) => {
    const detail = { event: name, client_id: ctx?.oidc?.client?.clientId, error: err?.message, description: err?.error_description };
    process.stderr.write(`${JSON.stringify(detail)}\n`);
    out(detail);
  });
}

server.on('request', provider.callback());
out({ ready: { issuer } });

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
