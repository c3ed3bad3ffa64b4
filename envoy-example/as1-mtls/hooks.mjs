// Module resolution hook (see preload.mjs): the rig's server.mjs gets provider.mjs for
// 'oidc-provider'; provider.mjs gets the real package, resolved as from server.mjs.
const PROVIDER = new URL('./provider.mjs', import.meta.url).href;
let serverUrl;

export async function resolve(specifier, context, next) {
  if (specifier === 'oidc-provider') {
    if (context.parentURL?.endsWith('/tests/rig/as_oidc/server.mjs')) {
      serverUrl = context.parentURL;
      return { url: PROVIDER, shortCircuit: true };
    }
    if (context.parentURL === PROVIDER) return next(specifier, { ...context, parentURL: serverUrl });
  }
  return next(specifier, context);
}
