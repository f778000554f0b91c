package otelpandadocauth

import (
	"time"

	"go.opentelemetry.io/otel/metric"
)

// ObserveExpiryAt is ObserveExpiry reading the time from now.
func ObserveExpiryAt(r Ranger, now func() time.Time, opts ...Option) (metric.Registration, error) {
	return observeExpiry(newConfig(opts), r, now)
}
