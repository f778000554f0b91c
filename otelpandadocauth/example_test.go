package otelpandadocauth_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"net/http/httptest"
	"strconv"
	"strings"

	"github.com/gopandadoc/pandadocauth/otelpandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Example_prometheus serves the metrics of a TokenSource on a Prometheus
// /metrics page, through OpenTelemetry's Prometheus exporter.
func Example_prometheus() {
	ctx := context.Background()
	pandadoc := pandadoctest.NewServer() // a fake PandaDoc
	defer pandadoc.Close()

	// The Prometheus exporter is a Reader of the MeterProvider.
	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
	if err != nil {
		log.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer mp.Shutdown(ctx)

	obs, err := otelpandadocauth.NewObserver(otelpandadocauth.WithMeterProvider(mp))
	if err != nil {
		log.Fatal(err)
	}
	ts := pandadoc.Config().TokenSource(pandadoc.IssueToken())
	ts.Observer = obs
	reg, err := otelpandadocauth.ObserveExpiry(otelpandadocauth.Sources{ts}, otelpandadocauth.WithMeterProvider(mp))
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Unregister()

	if _, err := ts.Refresh(ctx); err != nil { // one refresh
		log.Fatal(err)
	}

	page := httptest.NewServer(promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	defer page.Close()
	resp, err := page.Client().Get(page.URL + "/metrics")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()

	// Print a few lines; values that vary from run to run are rounded.
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		line := lines.Text()
		name, value, _ := strings.Cut(line, " ")
		switch {
		case strings.HasPrefix(line, "# TYPE pandadocauth_"),
			strings.HasPrefix(line, "pandadocauth_refreshes_total"),
			strings.HasPrefix(line, "pandadocauth_refresh_duration_seconds_count"),
			strings.HasPrefix(line, "pandadocauth_refresh_waiters_sum"):
			fmt.Println(line)
		case strings.HasPrefix(line, "pandadocauth_token_time_to_expiry_seconds"):
			seconds, _ := strconv.ParseFloat(value, 64)
			fmt.Printf("%s ~ %.0f days\n", name, seconds/86400)
		}
	}
	// Output:
	// # TYPE pandadocauth_refresh_duration_seconds histogram
	// pandadocauth_refresh_duration_seconds_count{outcome="refreshed",reason="forced"} 1
	// # TYPE pandadocauth_refresh_waiters histogram
	// pandadocauth_refresh_waiters_sum{outcome="refreshed",reason="forced"} 1
	// # TYPE pandadocauth_refreshes_total counter
	// pandadocauth_refreshes_total{outcome="refreshed",reason="forced"} 1
	// # TYPE pandadocauth_token_time_to_expiry_seconds gauge
	// pandadocauth_token_time_to_expiry_seconds ~ 365 days
}
