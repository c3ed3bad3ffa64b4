// The demo's stand-in, until the test rig's AS-1 has them, for oidc-provider's features.mTLS
// (RFC 8705 §3 certificate-bound access tokens) and its client mtls-client / mtls-secret.
//
//   node --import ./envoy-example/as1-mtls/preload.mjs tests/rig/as_oidc/server.mjs ...
//
// It changes nothing in tests/rig: a module hook (hooks.mjs) hands server.mjs, where it imports
// 'oidc-provider', a subclass of oidc-provider's Provider (provider.mjs) that adds the feature
// and the client to the configuration server.mjs gives it, unless that configuration already
// has them (then it is the rig's own and this does nothing).
import { register } from 'node:module';

register('./hooks.mjs', import.meta.url);
