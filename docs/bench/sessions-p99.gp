set terminal pngcairo size 1000,600 font "sans,10"
set output "/work/main/docs/bench/sessions-p99.png"
set datafile missing "?"
set grid
set key outside right top
set title "p99 round trip against N"
set xlabel "N (concurrent sessions / connections)"
set ylabel "p99 µs"
set logscale xy
stacks = "edge-native haproxy1 haproxy1-busy"
plot for [i=1:words(stacks)] "/work/main/docs/bench/sessions.dat" using 1:(strcol(2) eq word(stacks, i) ? $10 : 1/0) with linespoints lc i title word(stacks, i)." saturating", for [i=1:words(stacks)] "/work/main/docs/bench/sessions.dat" using 1:(strcol(2) eq word(stacks, i) ? $8 : 1/0) with linespoints lc i dashtype 2 title word(stacks, i)." paced"
