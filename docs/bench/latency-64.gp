set terminal pngcairo size 1000,600 font "sans,10"
set output "/work/main/docs/bench/latency-64.png"
set datafile missing "?"
set grid
set key outside right top
set title "64 B round trip latency per path (one connection, one message outstanding)"
set ylabel "µs"
set logscale y
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -30
plot "/work/main/docs/bench/latency-64.dat" using 2:xtic(1) title "p50", '' using 3 title "p99", '' using 4 title "p99.9"
