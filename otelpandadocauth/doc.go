// Package otelpandadocauth reports the work of pandadocauth token sources
// to OpenTelemetry: metrics of refreshes, 401s, Store failures and token
// lifetimes, and a span per refresh; and the work of a Limiter: waits
// for a slot, 429s and retries.
//
// NewObserver returns a pandadocauth.Observer; set it on a TokenSource
// (or a Grants, for every grant). ObserveExpiry registers the gauge of
// the time left until the served tokens expire:
//
//	obs, err := otelpandadocauth.NewObserver(
//		otelpandadocauth.WithMeterProvider(mp),
//		otelpandadocauth.WithTracerProvider(tp),
//	)
//	if err != nil {
//		return err
//	}
//	ts := cfg.TokenSource(tok)
//	ts.Observer = obs
//	reg, err := otelpandadocauth.ObserveExpiry(otelpandadocauth.Sources{ts},
//		otelpandadocauth.WithMeterProvider(mp))
//
// The metrics, under the pandadocauth. namespace:
//
//	pandadocauth.refreshes            counter    {refresh}  reason, outcome
//	pandadocauth.refresh.duration     histogram  s          reason, outcome
//	pandadocauth.refresh.waiters      histogram  {caller}   reason, outcome
//	pandadocauth.rejections           counter    {response} outcome, invalidated
//	pandadocauth.save.failures        counter    {failure}  retry
//	pandadocauth.lock.wait_time       histogram  s          outcome
//	pandadocauth.token.time_to_expiry gauge      s
//
// Each carries the attribute grant too with WithGrantAttribute. The
// values of reason and outcome are those of pandadocauth.RefreshReason,
// RefreshOutcome and ReplayOutcome's String methods.
//
// Set the same Observer as a pandadocauth.Limiter's Observer for the
// metrics of PandaDoc's rate limits:
//
//	pandadocauth.ratelimit.wait       histogram  s          class, outcome (sent, canceled)
//	pandadocauth.ratelimit.queued     updown     {request}  class
//	pandadocauth.ratelimit.throttled  counter    {response} class, hint_source, retried
//	pandadocauth.retries              counter    {retry}    class, reason
//
// class is a pandadocauth.Class's String, hint_source a HintSource's,
// reason a RetryReason's. These never carry the grant, even with
// WithGrantAttribute: a Limiter counts per PandaDoc user, and each user
// would be a time series of its own.
//
// A refresh's span, pandadocauth.refresh, is a child of the span of the
// caller that started the refresh, when it has one, and links to the
// span of every caller that joined it. It ends with the attributes
// outcome, attempts and waiters, and with an error status when the
// refresh failed. The token endpoint's request runs in its context, so
// an instrumented HTTP client's span is its child.
//
// Guarantees: no token or secret is ever an attribute, a span event or a
// status message (the errors pandadocauth reports carry none); the
// instrumentation scope is ScopeName and Version.
package otelpandadocauth
