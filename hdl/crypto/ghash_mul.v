`resetall
`timescale 1ns / 1ps
`default_nettype none

// Multiplication in GF(2^128) as GCM defines it (NIST SP 800-38D,
// algorithm 1): bit 127 of a vector is the coefficient of x^0, the
// reduction polynomial is R = 0xE1 || 0^120.
//
// Digit-serial: DIGIT bits of `a` per clock, so a product takes
// 128/DIGIT clocks after the start edge; `done` pulses with `z` valid, and a
// new `start` is accepted on that same cycle (busy is already low).
module ghash_mul #(
    parameter integer DIGIT = 16
) (
    input  wire         clk,
    input  wire         rst,
    input  wire         start,
    input  wire [127:0] a,
    input  wire [127:0] h,
    output reg          busy,
    output reg          done,
    output reg  [127:0] z
);
    localparam integer STEPS = 128 / DIGIT;
    localparam [127:0] R = {8'he1, 120'h0};

    reg [127:0] xs;
    reg [127:0] v;
    reg [7:0]   cnt;

    // One step of DIGIT bits, computed only while a product runs (the
    // simulator does no work for an idle multiplier).
    always @(posedge clk) begin : step
        reg [127:0] z_n;
        reg [127:0] v_n;
        integer j;
        if (rst) begin
            busy <= 1'b0;
            done <= 1'b0;
            z <= 128'h0;
            v <= 128'h0;
            xs <= 128'h0;
            cnt <= 8'd0;
        end else begin
            done <= 1'b0;
            if (start && !busy) begin
                xs <= a;
                v <= h;
                z <= 128'h0;
                cnt <= 8'd0;
                busy <= 1'b1;
            end else if (busy) begin
                z_n = z;
                v_n = v;
                for (j = 0; j < DIGIT; j = j + 1) begin
                    if (xs[127-j]) z_n = z_n ^ v_n;
                    v_n = v_n[0] ? ({1'b0, v_n[127:1]} ^ R) : {1'b0, v_n[127:1]};
                end
                z <= z_n;
                v <= v_n;
                xs <= xs << DIGIT;
                cnt <= cnt + 8'd1;
                if (cnt == STEPS[7:0] - 8'd1) begin
                    busy <= 1'b0;
                    done <= 1'b1;
                end
            end
        end
    end
endmodule

`resetall
