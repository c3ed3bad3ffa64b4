// oidc-provider's Provider with RFC 8705 §3 certificate-bound access tokens for one more
// client, for the demo (see preload.mjs):
//   mtls-client / mtls-secret  client_secret_basic; client_credentials; scope "read write admin";
//                              tls_client_certificate_bound_access_tokens: every access token
//                              (JWT or opaque) carries cnf.x5t#S256 of the TLS client
//                              certificate its token request came with.
// TLS ends at Envoy's mTLS listener (envoy-example/envoy.yaml, ingress_tls), which removes any
// x-forwarded-client-cert a client sent and sets `Hash=<hex>;Cert="<URL-encoded PEM>"` when
// the client presented a certificate (forward_client_cert_details: SANITIZE_SET,
// set_current_client_cert_details: {cert: true}); getCertificate reads Cert= from it. The
// demo's trust: only Envoy reaches AS-1 (anything on 127.0.0.1 that calls AS-1 directly can
// claim any certificate).
import Provider from 'oidc-provider';

export * from 'oidc-provider';

const MTLS_CLIENT = {
  client_id: 'mtls-client',
  client_secret: 'mtls-secret',
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  scope: 'read write admin',
  token_endpoint_auth_method: 'client_secret_basic',
  tls_client_certificate_bound_access_tokens: true,
};

/** The PEM in the one XFCC element's Cert= (URL-encoded, maybe quoted); else undefined. */
function certificateFromXfcc(ctx) {
  const header = ctx.get('x-forwarded-client-cert');
  const certs = [...header.matchAll(/(?:^|[;,])\s*Cert="?([^";,]*)"?/gi)];
  if (certs.length !== 1 || header.includes(',')) return undefined; // one element, one Cert=
  try {
    const pem = decodeURIComponent(certs[0][1]);
    return pem.startsWith('-----BEGIN CERTIFICATE-----') ? pem : undefined;
  } catch {
    return undefined;
  }
}

function withMtls(config) {
  if (config.features?.mTLS?.enabled || config.clients?.some((c) => c.client_id === MTLS_CLIENT.client_id)) {
    return config; // the rig's AS-1 has its own: leave it alone
  }
  return {
    ...config,
    clients: [...(config.clients ?? []), MTLS_CLIENT],
    features: {
      ...config.features,
      // client authentication stays client_secret_* (tlsClientAuth, selfSignedTlsClientAuth off)
      mTLS: { enabled: true, certificateBoundAccessTokens: true, getCertificate: certificateFromXfcc },
    },
  };
}

export default class DemoProvider extends Provider {
  constructor(issuer, config) {
    super(issuer, withMtls(config));
  }
}
