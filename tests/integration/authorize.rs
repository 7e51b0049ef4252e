//! The authorization request as the provider receives it: `oidc.extra_auth_params` are added, and
//! the parameters portcullis sets itself are its own.

use crate::browser::*;

#[tokio::test]
async fn extra_auth_params_reach_the_authorization_request() {
    let s = stack(StackOptions {
        oidc_extra: "extra_auth_params = { prompt = \"login\", acr_values = \"urn:mfa\" }".into(),
        ..Default::default()
    })
    .await;
    let b = Browser::new();
    let authorize = b.redirect_from(&format!("{}/x", s.base)).await;
    let q = query_map(&authorize);
    assert_eq!(q["prompt"], "login");
    assert_eq!(q["acr_values"], "urn:mfa");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    // The provider accepts them and the login completes.
    let callback = b.provider_login(&authorize, "alice").await;
    assert_eq!(b.redirect_from(&callback).await, format!("{}/x", s.base));
}
