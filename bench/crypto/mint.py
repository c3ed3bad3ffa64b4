"""Writes fixtures.json for the crypto bench: a JWKS and N distinct tokens per algorithm."""
import json, os, sys, time
from jwcrypto import jwk, jwt

n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
ISS, AUD = "https://bench.example", "bench-api"
keys = {
    "rsa-2048": jwk.JWK.generate(kty="RSA", size=2048, kid="rsa-2048"),
    "p256": jwk.JWK.generate(kty="EC", crv="P-256", kid="p256"),
    "p384": jwk.JWK.generate(kty="EC", crv="P-384", kid="p384"),
    "ed25519": jwk.JWK.generate(kty="OKP", crv="Ed25519", kid="ed25519"),
}
kids = {"RS256": "rsa-2048", "PS256": "rsa-2048", "ES256": "p256", "ES384": "p384", "EdDSA": "ed25519"}
now = int(time.time())
tokens = {}
for alg, kid in kids.items():
    out = []
    for i in range(n):
        claims = {"iss": ISS, "aud": AUD, "sub": f"user-{i}", "scope": "read", "iat": now - 10,
                  "exp": now + 86400, "jti": os.urandom(8).hex()}
        t = jwt.JWT(header={"alg": alg, "kid": kid, "typ": "at+jwt"}, claims=claims)
        t.make_signed_token(keys[kid])
        out.append(t.serialize())
    tokens[alg] = out
# DPoP proofs (RFC 9449) for one access token, all with one client key (as a client sends them):
# N distinct jti, for bench/crypto/run N dpop.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import proofs  # noqa: E402  (bench/proofs.py)

client = proofs.ProofKey()
access = tokens["ES256"][0]
dpop = {"uri": "https://api.bench.example/api/orders", "token": access, "jkt": client.jkt,
        "proofs": [client.proof(htm="GET", htu="https://api.bench.example/api/orders", token=access, iat=now,
                                jti=os.urandom(12).hex()) for _ in range(n)]}
# The gateway's own signing keys (issue 17): private JWKs, for bench/crypto/run N sign.
signing = [json.loads(jwk.JWK.generate(kty="OKP", crv="Ed25519", kid="gw-ed25519").export_private()),
           json.loads(jwk.JWK.generate(kty="EC", crv="P-256", kid="gw-p256").export_private())]
doc = {"issuer": ISS, "audience": AUD, "now": now, "signing_keys": signing,
       "jwks": {"keys": [json.loads(k.export_public()) for k in keys.values()]}, "tokens": tokens, "dpop": dpop}
with open(sys.argv[1], "w") as f:
    json.dump(doc, f)
