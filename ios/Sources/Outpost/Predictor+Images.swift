// Conveniences over the generated API (Outpost.swift): open a package from a URL,
// and infer on Data or a CGImage. Hand-written; everything else is generated.

import CoreGraphics
import Foundation

extension Predictor {
    /// Opens a package from a file URL, such as a bundle resource:
    /// `Bundle.main.url(forResource: "model", withExtension: "opk")!`.
    public convenience init(url: URL, config: Config = Config()) throws {
        try self.init(packagePath: url.path, config: config)
    }

    /// Runs the model on an encoded image (JPEG, PNG or BMP bytes).
    public func infer(data: Data) throws -> Results {
        try infer(image: data)
    }

    /// Runs the model on a `CGImage`, drawn into 8-bit RGBA rows in sRGB.
    public func infer(cgImage image: CGImage) throws -> Results {
        let width = image.width
        let height = image.height
        let stride = width * 4
        guard width > 0, height > 0,
              let space = CGColorSpace(name: CGColorSpace.sRGB)
        else {
            throw OutpostError.Input(code: 1102, message: "the CGImage has no pixels")
        }
        var pixels = Data(count: stride * height)
        let drawn = pixels.withUnsafeMutableBytes { (buffer: UnsafeMutableRawBufferPointer) -> Bool in
            guard let context = CGContext(
                data: buffer.baseAddress, width: width, height: height,
                bitsPerComponent: 8, bytesPerRow: stride, space: space,
                bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue)
            else { return false }
            context.draw(image, in: CGRect(x: 0, y: 0, width: width, height: height))
            return true
        }
        guard drawn else {
            throw OutpostError.Input(code: 1006, message: "cannot draw the CGImage into RGBA pixels")
        }
        return try inferPixels(
            pixels: pixels, width: UInt32(width), height: UInt32(height),
            stride: UInt32(stride), format: .rgba8)
    }
}
